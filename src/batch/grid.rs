//! A grid of runs: every content image after every style image, for every combination of the
//! swept options' values (`--style-weight 1e2,1e3`), in a stable order with deterministic
//! output names.
//!
//! The order is the contents' (each directory's images sorted by name, the sources in the order
//! given), then the styles', then each swept option's values in the order given, the last
//! option varying fastest. An output is named `CONTENT--STYLE.png` (the files' stems), with
//! `_FLAG-VALUE` for each swept option: `tubingen--starry_night_style-weight-1e3.png`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::settings::options::{Kind, OPTIONS, RunOption};
use crate::settings::{Settings, StyleFile};

/// The image files a source names: a directory's images (by extension, sorted by name), the
/// files a pattern with `*` or `?` in its last part matches (sorted), or one file.
pub fn images(source: &Path) -> Result<Vec<PathBuf>> {
    let bad = |message: String| Error::Image { path: source.to_path_buf(), message };
    let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (dir, pattern) = if name.contains(['*', '?']) {
        let dir = source.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        (dir.to_path_buf(), Some(name))
    } else if source.is_dir() {
        (source.to_path_buf(), None)
    } else {
        return match source.is_file() {
            true => Ok(vec![source.to_path_buf()]),
            false => Err(bad("no such file, directory or pattern".into())),
        };
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| bad(crate::image_io::io_reason(&e)))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match &pattern {
                Some(pat) => matches(pat.as_bytes(), n.as_bytes()),
                None => is_image_name(&n),
            }
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(bad(if pattern.is_some() { "matches no file" } else { "holds no image" }.into()));
    }
    Ok(found)
}

fn is_image_name(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    !name.starts_with('.') && ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif"].contains(&ext.as_str())
}

/// Whether `name` matches the pattern (`*`: any run of characters, `?`: one).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => matches(&pattern[1..], name) || (!name.is_empty() && matches(pattern, &name[1..])),
        (Some(b'?'), Some(_)) => matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Whether an option's value may be a comma-separated list of values to sweep: a number, a
/// count or a choice (an option whose one value holds commas, like `--scales 256,512`, is not).
pub fn sweepable(option: &RunOption) -> bool {
    matches!(option.kind, Kind::Count | Kind::Number | Kind::Choice(_))
}

/// The grid's runs and their outputs under `out_dir` (extension `ext`): `contents` x `styles`
/// x every combination of the `given` options' values, where a sweepable option's value with
/// commas is swept. `given` are options of [`OPTIONS`] by flag with their values (one per
/// occurrence), as the command line gave them.
pub fn expand(
    contents: &[PathBuf],
    styles: &[PathBuf],
    given: &[(&str, Vec<String>)],
    out_dir: &Path,
    ext: &str,
) -> Result<Vec<(Settings, PathBuf)>> {
    let mut fixed = Vec::new();
    let mut swept: Vec<(&'static RunOption, Vec<String>)> = Vec::new();
    for (flag, values) in given {
        let option =
            RunOption::named(flag).ok_or_else(|| Error::Config(format!("--{flag} is not an option of a run")))?;
        match values.as_slice() {
            [one] if sweepable(option) && one.contains(',') => {
                let list: Vec<String> = one.split(',').map(|v| v.trim().to_string()).collect();
                if list.iter().any(String::is_empty) {
                    return Err(Error::Config(format!("--{flag} {one}: a list has an empty value")));
                }
                swept.push((option, list));
            }
            _ => fixed.push((option, values.clone())),
        }
    }
    let mut runs = Vec::new();
    let combinations: usize = swept.iter().map(|(_, v)| v.len()).product();
    for content in contents {
        for style in styles {
            for k in 0..combinations {
                // The k-th combination, the last option fastest.
                let mut choice = Vec::with_capacity(swept.len());
                let mut rest = k;
                for (option, values) in swept.iter().rev() {
                    choice.push((*option, values[rest % values.len()].clone()));
                    rest /= values.len();
                }
                choice.reverse();
                let mut settings = Settings::new(content.clone(), [StyleFile::new(style.clone())]);
                let mut options: Vec<(&RunOption, Vec<String>)> = fixed
                    .iter()
                    .map(|(o, v)| (*o, v.clone()))
                    .chain(choice.iter().map(|(o, v)| (*o, vec![v.clone()])))
                    .collect();
                options.sort_by_key(|(o, _)| OPTIONS.iter().position(|t| t.flag == o.flag));
                for (option, values) in &options {
                    option.apply(&mut settings, values)?;
                }
                let mut name = format!("{}--{}", stem(content), stem(style));
                for (option, value) in &choice {
                    name.push_str(&format!("_{}-{}", option.flag, safe(value)));
                }
                runs.push((settings, out_dir.join(format!("{name}.{ext}"))));
            }
        }
    }
    Ok(runs)
}

fn stem(path: &Path) -> String {
    safe(&path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
}

/// `text` with every character but letters, digits, `.`, `+` and `-` made `_`.
fn safe(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || ".+-".contains(c) { c } else { '_' }).collect()
}

/// One manifest line (JSON Lines) for a run: its settings with `"output"` (the file name, or
/// `{"path": NAME, "sixteen_bit": ..}` with non-default write options), every path under
/// `dir` (the manifest's directory) written relative to it, so that the manifest and its files
/// can move together (onto a cluster's volume).
pub fn manifest_line(settings: &Settings, output: &Path, dir: &Path) -> Result<String> {
    let relative = |p: &Path| p.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf());
    let mut s = settings.clone();
    s.content = relative(&s.content);
    for st in &mut s.styles {
        st.image = relative(&st.image);
        for m in st.region_mask.iter_mut().chain(st.source_mask.iter_mut()) {
            *m = relative(m);
        }
    }
    for p in s.start.iter_mut().chain(s.network.weights.iter_mut()) {
        *p = relative(p);
    }
    let mut value = serde_json::to_value(&s).map_err(|e| Error::Config(format!("a path is not UTF-8: {e}")))?;
    let output = relative(output);
    let path = output.to_str().ok_or_else(|| Error::output(&output, "the name is not UTF-8"))?;
    // The file name, with how it is written when that is not the default.
    let object = value.as_object_mut().expect("settings are an object");
    let written = match object.remove("output") {
        Some(serde_json::Value::Object(mut options)) => {
            options.insert("path".into(), path.into());
            serde_json::Value::Object(options)
        }
        _ => path.into(),
    };
    object.insert("output".into(), written);
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names() {
        assert!(matches(b"*.jpg", b"a.jpg"));
        assert!(matches(b"img_??.png", b"img_01.png"));
        assert!(!matches(b"img_??.png", b"img_1.png"));
        assert!(matches(b"*", b""));
        assert!(!matches(b"*.jpg", b"a.jpeg"));
    }

    #[test]
    fn the_grid_is_the_cross_product_in_order() {
        let c = [PathBuf::from("a/one.jpg"), PathBuf::from("a/two.jpg")];
        let s = [PathBuf::from("s/x.png")];
        let given = [
            ("style-weight", vec!["1e2,1e3".to_string()]),
            ("seed", vec!["1,2,3".to_string()]),
            ("size", vec!["64".to_string()]),
        ];
        let runs = expand(&c, &s, &given, Path::new("out"), "png").unwrap();
        assert_eq!(runs.len(), 2 * 2 * 3);
        let names: Vec<String> =
            runs.iter().map(|(_, o)| o.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names[0], "one--x_style-weight-1e2_seed-1.png");
        assert_eq!(names[1], "one--x_style-weight-1e2_seed-2.png");
        assert_eq!(names[3], "one--x_style-weight-1e3_seed-1.png");
        assert_eq!(names[6], "two--x_style-weight-1e2_seed-1.png");
        assert_eq!(runs[4].0.config.loss.style_weight, 1e3);
        assert_eq!(runs[4].0.config.seed, 2);
        assert!(runs.iter().all(|(s, _)| s.config.size == 64));
        // Not sweepable: a list that is one value.
        let runs = expand(&c[..1], &s, &[("scales", vec!["32,64".to_string()])], Path::new("o"), "png").unwrap();
        assert_eq!(runs.len(), 1);
        let e = expand(&c, &s, &[("style-weight", vec!["1,,2".to_string()])], Path::new("o"), "png").unwrap_err();
        assert!(e.to_string().contains("empty value"), "{e}");
    }
}
