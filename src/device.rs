//! Which device computes the objective: the `network.device` setting (`auto`, `cpu`, `gpu`) and
//! the [`Backend`] it makes from a network.
//!
//! `auto` takes a hardware GPU when `wgpu` finds one and the run fits in it, and the CPU
//! otherwise (a software Vulkan driver such as Mesa's lavapipe does not count: it is slower than
//! the CPU path); `gpu` takes any adapter, software included, and is an error without one; `cpu`
//! never looks for one.

use std::str::FromStr;

use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::vgg::Vgg;

/// Where the objective is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// A hardware GPU if there is one with room for the run, else the CPU.
    #[default]
    Auto,
    /// The CPU engine.
    Cpu,
    /// The GPU engine (wgpu); an error if there is none or it lacks room.
    Gpu,
}

impl Device {
    /// The name settings and flags use: `auto`, `cpu`, `gpu`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

impl FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            _ => Err(Error::setting("network.device", format!("is '{s}': use auto, cpu or gpu"))),
        }
    }
}

/// A backend that can be shared between threads.
pub type SharedBackend = Box<dyn Backend + Send>;

/// The network `net` on `device`. Under `auto`, `plan` is tried on a hardware GPU (say,
/// [`crate::transfer::Stylizer::plan`] for the run at hand): a GPU it refuses for memory is
/// passed over for the CPU, as is one that cannot be opened; what it made on the device chosen
/// comes back with it (`None` where it was not tried: the caller makes it then, once). `say`
/// gets one line naming the device chosen (not for `cpu`).
pub fn backend<T>(
    net: Vgg,
    device: Device,
    plan: &dyn Fn(&dyn Backend) -> Result<T>,
    say: &mut dyn FnMut(&str),
) -> Result<(SharedBackend, Option<T>)> {
    if device == Device::Cpu {
        return Ok((Box::new(net), None));
    }
    #[cfg(feature = "gpu")]
    {
        use crate::gpu::{Gpu, GpuVgg};
        let auto = device == Device::Auto;
        match Gpu::find(auto) {
            Ok(Some(gpu)) => {
                let software = if gpu.is_software() { ", a software driver: slower than the CPU path" } else { "" };
                let name = format!("{}{software}", gpu.name());
                let on = GpuVgg::new(gpu, net);
                if !auto {
                    say(&format!("computing on the GPU: {name}"));
                    return Ok((Box::new(on), None));
                }
                return match plan(&on) {
                    Err(Error::Memory { .. }) => {
                        say(&format!("computing on the CPU: the run does not fit in {name}"));
                        Ok((Box::new(on.into_cpu()), None))
                    }
                    made => {
                        say(&format!("computing on the GPU: {name}"));
                        Ok((Box::new(on), Some(made?)))
                    }
                };
            }
            Ok(None) if !auto => {
                return Err(Error::setting(
                    "network.device",
                    "is gpu but no GPU was found (no Vulkan, Metal or DX12 adapter; on Linux install the \
                     vendor's Vulkan driver, or mesa-vulkan-drivers for a software one)",
                ));
            }
            Err(e) if auto => say(&format!("computing on the CPU: the GPU cannot be used ({e})")),
            Err(e) => return Err(e),
            Ok(None) => say("computing on the CPU (no GPU found)"),
        }
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = plan;
        if device == Device::Gpu {
            return Err(Error::setting("network.device", "is gpu but this impasto was built without the gpu feature"));
        }
        say("computing on the CPU (built without the gpu feature)");
    }
    Ok((Box::new(net), None))
}
