//! Many runs from one manifest, for a scheduler's job array or one process: what an item is, how
//! a manifest's lines become items, which item a task runs, and whether an item is done.
//!
//! A manifest is JSON Lines (`.jsonl`, `.ndjson`: each line the settings JSON that
//! `impasto settings --json` prints, with `"output": PATH`, or `{"path": PATH, ...}` with the
//! write options) or CSV with a header (`.csv`:
//! `content,style,output` and further columns named by settings field path,
//! `config.loss.style_weight`, `styles[0].blend`). Blank lines and, in JSON Lines, lines starting
//! with `#` are not items. Relative paths are relative to the manifest's directory. Item `i` is
//! the `i`-th item line (from 0); [`Manifest::item`] finds it by scanning lines without parsing
//! or keeping the others, so a million-line manifest answers in one pass of bounded memory.
//!
//! An item is done when its output exists and carries the item's settings (every output carries
//! the settings it was made with): a rerun skips it, changed settings run it again. Outputs are
//! written complete under a temporary name and renamed, so an item is absent or whole, and two
//! workers on one item cannot leave a half-written file.

pub mod grid;
pub mod templates;

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::image_io;
use crate::settings::Settings;
use crate::transfer::Stylizer;

/// The longest manifest line read (a run's settings are a few kilobytes).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The end of the message of a line that is not manifest text.
const NOT_A_MANIFEST: &str = " (is this a manifest?)";

/// One run of a manifest: its settings (paths resolved) and where its image goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Its index among the manifest's items, from 0.
    pub index: usize,
    /// Its line in the manifest, from 1.
    pub line: usize,
    /// The run (paths relative to the manifest's directory made absolute).
    pub settings: Settings,
    /// The output image.
    pub output: PathBuf,
}

/// How a manifest's lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One settings JSON object with `"output"` per line.
    JsonLines,
    /// A header row, then one run per row.
    Csv,
}

/// A manifest file, opened: its lines are read when items are asked for.
#[derive(Clone, Debug)]
pub struct Manifest {
    path: PathBuf,
    dir: PathBuf,
    format: Format,
}

/// Where an item stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Its output exists and carries its settings.
    Done,
    /// No output yet.
    Missing,
    /// No output, and the last attempt failed for good (the reason, from `OUTPUT.failed`).
    Failed(String),
    /// An output exists but was made with other settings (or is not one impasto wrote).
    Stale,
}

impl Manifest {
    /// Opens `path` (a regular file; `.csv` is CSV, anything else JSON Lines).
    pub fn open(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let bad = |message: String| Error::SettingsFile { path: path.to_path_buf(), message };
        image_io::open_regular_file(path, u64::MAX).map_err(bad)?;
        let dir = std::fs::canonicalize(path)
            .map_err(|e| bad(image_io::io_reason(&e)))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        Ok(Manifest { path: path.to_path_buf(), dir, format: if csv { Format::Csv } else { Format::JsonLines } })
    }

    /// The manifest's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths are relative to (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How its lines are written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The error of line `line`: `manifest.jsonl:3: message`.
    fn at(&self, line: usize, message: impl Into<String>) -> Error {
        Error::SettingsFile { path: PathBuf::from(format!("{}:{line}", self.path.display())), message: message.into() }
    }

    fn lines(&self) -> Result<Lines> {
        let (file, _) = image_io::open_regular_file(&self.path, u64::MAX)
            .map_err(|message| Error::SettingsFile { path: self.path.clone(), message })?;
        Ok(Lines { reader: BufReader::with_capacity(1 << 16, file), number: 0, buffer: Vec::new() })
    }

    /// The CSV header (empty for JSON Lines) and the lines after it.
    fn body(&self) -> Result<(Vec<String>, Lines)> {
        let mut lines = self.lines()?;
        if self.format == Format::JsonLines {
            return Ok((Vec::new(), lines));
        }
        loop {
            let Some(number) = lines.next_line().map_err(|m| self.at(lines.number, m))? else {
                return Err(self.at(1, "is empty: a CSV manifest starts with a header (content,style,output,...)"));
            };
            let text = lines.text().map_err(|m| self.at(number, m))?;
            if text.trim().is_empty() {
                continue;
            }
            let header: Vec<String> = parse_csv_row(text)
                .map_err(|m| self.at(number, m))?
                .into_iter()
                .map(|h| h.trim().to_string())
                .collect();
            for needed in ["content", "style", "output"] {
                if !header.iter().any(|h| h == needed) {
                    return Err(self.at(number, format!("the header has no `{needed}` column")));
                }
            }
            let mut seen = HashSet::new();
            if let Some(twice) = header.iter().find(|h| !seen.insert(h.as_str())) {
                return Err(self.at(number, format!("the header names `{twice}` twice")));
            }
            return Ok((header, lines));
        }
    }

    /// Every item, in order; an item line that cannot be read is an error naming its line.
    pub fn items(&self) -> Result<Items<'_>> {
        let (header, lines) = self.body()?;
        Ok(Items { manifest: self, header, lines, index: 0 })
    }

    /// Item `index` (from 0), found without parsing or keeping the lines before it.
    pub fn item(&self, index: usize) -> Result<Item> {
        let (header, mut lines) = self.body()?;
        let mut seen = 0;
        while let Some(number) = lines.next_line().map_err(|m| self.at(lines.number, m))? {
            if !self.is_item(lines.raw()) {
                continue;
            }
            if seen == index {
                let text = lines.text().map_err(|m| self.at(number, m))?;
                return self.parse(index, number, text, &header);
            }
            seen += 1;
        }
        match seen {
            0 => Err(Error::SettingsFile { path: self.path.clone(), message: "has no items".into() }),
            n => Err(Error::setting(
                "index",
                format!("is {index}, but {} has {n} items (0 to {})", self.path.display(), n - 1),
            )),
        }
    }

    /// How many items there are (lines are counted, not parsed).
    pub fn len(&self) -> Result<usize> {
        let (_, mut lines) = self.body()?;
        let mut n = 0;
        while lines.next_line().map_err(|m| self.at(lines.number, m))?.is_some() {
            n += self.is_item(lines.raw()) as usize;
        }
        Ok(n)
    }

    /// Whether the manifest has no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    fn is_item(&self, raw: &[u8]) -> bool {
        let text = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw).trim_ascii();
        let comment = self.format == Format::JsonLines && text.starts_with(b"#");
        !(text.is_empty() || comment)
    }

    fn parse(&self, index: usize, line: usize, text: &str, header: &[String]) -> Result<Item> {
        let origin = PathBuf::from(format!("{}:{line}", self.path.display()));
        let mut object = match self.format {
            Format::JsonLines => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(o)) => o,
                Ok(_) => return Err(self.at(line, "is not a JSON object (a run's settings with \"output\")")),
                Err(e) => return Err(self.at(line, format!("is not JSON: {e}"))),
            },
            Format::Csv => {
                csv_object(header, &parse_csv_row(text).map_err(|m| self.at(line, m))?).map_err(|m| self.at(line, m))?
            }
        };
        // `"output": PATH`, or with how it is written: `{"path": PATH, "sixteen_bit": true}`.
        let output = match object.remove("output") {
            Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
            Some(Value::Object(mut o)) => match o.remove("path") {
                Some(Value::String(s)) if !s.is_empty() => {
                    object.insert("output".into(), Value::Object(o));
                    PathBuf::from(s)
                }
                _ => return Err(self.at(line, "output.path: missing (where the item's image goes)")),
            },
            Some(_) => return Err(self.at(line, "output: must be a file name (or {\"path\": NAME, ...})")),
            None => return Err(self.at(line, "output: missing (where the item's image goes)")),
        };
        // The line's own fields; serde's position would be in the object re-serialised here.
        let mut settings = Settings::from_json(&Value::Object(object).to_string(), &origin).map_err(|e| match e {
            Error::SettingsFile { path, message } => {
                let message = match message.rfind(" at line ") {
                    Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
                    _ => message,
                };
                Error::SettingsFile { path, message }
            }
            e => e,
        })?;
        resolve(&mut settings, &self.dir);
        Ok(Item { index, line, settings, output: self.dir.join(output) })
    }

    /// Every item, checked as a run would check it before any work: its settings parse and are
    /// valid, its images exist and are images, its output is writable with a known extension,
    /// and no two items write one output. Returns how many items there are, or every bad item's
    /// error (one a line; at most 1000) when any is bad. The items are not kept (a digest of
    /// each output's path is, to find the duplicates).
    pub fn check_all(&self) -> std::result::Result<usize, Vec<Error>> {
        use sha2::Digest;
        let mut errors = Vec::new();
        let mut outputs = std::collections::HashMap::<[u8; 16], usize>::new();
        let iter = match self.items() {
            Ok(i) => i,
            Err(e) => return Err(vec![e]),
        };
        let mut count = 0;
        for item in iter {
            count += 1;
            match item.and_then(|i| self.check(&i).map(|()| i)) {
                Ok(item) => {
                    let digest = sha2::Sha256::digest(normalise(&item.output).as_os_str().as_encoded_bytes());
                    let key: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
                    if let Some(first) = outputs.insert(key, item.line) {
                        let message = format!("output: {} is also line {first}'s output", item.output.display());
                        errors.push(self.at(item.line, message));
                    }
                }
                Err(e) => {
                    // A line that is not text, or far too long: the file is not a manifest, and
                    // one line says so.
                    let not_text = e.to_string().ends_with(NOT_A_MANIFEST);
                    errors.push(e);
                    if not_text {
                        break;
                    }
                }
            }
            if errors.len() >= 1000 {
                break;
            }
        }
        if count == 0 && errors.is_empty() {
            errors.push(Error::SettingsFile { path: self.path.clone(), message: "has no items".into() });
        }
        if errors.is_empty() { Ok(count) } else { Err(errors) }
    }

    /// One item checked before it runs (see [`Manifest::check_all`]; duplicates aside).
    pub fn check(&self, item: &Item) -> Result<()> {
        check_item(item, &format!("{}:{}", self.path.display(), item.line))
    }
}

/// One item checked before it runs: its settings are valid, its images exist and are images, its
/// output is writable with a known extension and is none of its inputs. Errors start with
/// `origin` (`runs.jsonl:3`).
pub fn check_item(item: &Item, origin: &str) -> Result<()> {
    let at = |message: String| Error::SettingsFile { path: PathBuf::from(origin), message };
    let in_line = |e: Error| match e {
        Error::SettingsFile { .. } => e,
        e => crate::settings::in_file(e, Path::new(origin)),
    };
    Stylizer::new(item.settings.config.clone()).map_err(in_line)?;
    // An output directory that does not exist yet is made when the item runs.
    let parent = item.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let format = if parent.exists() {
        image_io::check_output(&item.output)
    } else {
        match parent.ancestors().find(|a| a.exists()) {
            Some(a) if !a.is_dir() => Err(Error::output(&item.output, format!("{} is not a directory", a.display()))),
            _ => image_io::OutputFormat::from_path(&item.output),
        }
    }
    .map_err(|e| at(format!("output: {e}")))?;
    item.settings.output.check(format).map_err(in_line)?;
    for (field, path) in image_fields(&item.settings) {
        if let Err(m) = looks_like_image(&path) {
            return Err(at(format!("{field}: {}: {m}", path.display())));
        }
        if normalise(&path) == normalise(&item.output) {
            return Err(at(format!("output: {} is also its {field}", path.display())));
        }
    }
    if let Some(w) = &item.settings.network.weights {
        image_io::open_regular_file(w, u64::MAX).map_err(|m| at(format!("network.weights: {}: {m}", w.display())))?;
    }
    Ok(())
}

/// The items of a manifest, in order ([`Manifest::items`]).
pub struct Items<'m> {
    manifest: &'m Manifest,
    header: Vec<String>,
    lines: Lines,
    index: usize,
}

impl Iterator for Items<'_> {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Result<Item>> {
        let m = self.manifest;
        loop {
            let number = match self.lines.next_line() {
                Ok(Some(n)) => n,
                Ok(None) => return None,
                Err(message) => return Some(Err(m.at(self.lines.number, message))),
            };
            if !m.is_item(self.lines.raw()) {
                continue;
            }
            let index = self.index;
            self.index += 1;
            let parsed =
                self.lines.text().map_err(|e| m.at(number, e)).and_then(|t| m.parse(index, number, t, &self.header));
            return Some(parsed);
        }
    }
}

/// A manifest's lines, one at a time, each at most [`MAX_LINE_BYTES`].
struct Lines {
    reader: BufReader<File>,
    number: usize,
    buffer: Vec<u8>,
}

impl Lines {
    /// Reads the next line; its 1-based number, `None` at the end.
    fn next_line(&mut self) -> std::result::Result<Option<usize>, String> {
        self.buffer.clear();
        self.number += 1;
        loop {
            let available =
                self.reader.fill_buf().map_err(|e| format!("cannot read it: {}", image_io::io_reason(&e)))?;
            if available.is_empty() {
                return Ok((!self.buffer.is_empty()).then_some(self.number));
            }
            let (take, end) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if self.buffer.len() + take > MAX_LINE_BYTES + 1 {
                return Err(format!("line is longer than {MAX_LINE_BYTES} bytes{NOT_A_MANIFEST}"));
            }
            self.buffer.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if end {
                return Ok(Some(self.number));
            }
        }
    }

    fn raw(&self) -> &[u8] {
        &self.buffer
    }

    fn text(&self) -> std::result::Result<&str, String> {
        let text = std::str::from_utf8(&self.buffer).map_err(|_| format!("is not UTF-8 text{NOT_A_MANIFEST}"))?;
        if text.contains('\0') {
            return Err(format!("holds a NUL byte{NOT_A_MANIFEST}"));
        }
        // A byte-order mark (spreadsheets write one) is not part of the first line.
        let text = if self.number == 1 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text };
        Ok(text.trim_end_matches(['\n', '\r']))
    }
}

/// One CSV row (RFC 4180: commas, fields in double quotes with `""` for a quote; a row is one
/// line).
fn parse_csv_row(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field does not end on its line".into()),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err(format!("text after the quoted field \"{field}\""));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// A CSV row as the settings object it stands for: `content`, `styles[0].image` from `style`,
/// `output`, and each further column at its field path. A cell is read as JSON where it is JSON
/// (`1e3`, `true`, `["relu1_1"]`) and as text otherwise; an empty cell leaves the field out.
fn csv_object(header: &[String], row: &[String]) -> std::result::Result<Map<String, Value>, String> {
    if row.len() != header.len() {
        return Err(format!("has {} fields, the header {}", row.len(), header.len()));
    }
    let mut root = Value::Object(Map::new());
    for (name, cell) in header.iter().zip(row) {
        if cell.is_empty() {
            continue;
        }
        let value = match name.as_str() {
            "content" | "output" | "style" => Value::String(cell.clone()),
            _ => serde_json::from_str(cell).unwrap_or_else(|_| Value::String(cell.clone())),
        };
        let path = match name.as_str() {
            "style" => "styles[0].image",
            "output" => "output.path",
            other => other,
        };
        set_path(&mut root, path, value).map_err(|m| format!("column `{name}`: {m}"))?;
    }
    match root {
        Value::Object(o) => Ok(o),
        _ => unreachable!("the root is an object"),
    }
}

/// Puts `value` at a field path (`config.loss.style_weight`, `styles[1].blend`).
fn set_path(root: &mut Value, path: &str, value: Value) -> std::result::Result<(), String> {
    let mut at = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (k, part) in parts.iter().enumerate() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => {
                let i = rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()).filter(|&i| i < 64);
                (n, Some(i.ok_or_else(|| format!("`{part}` is not a field with an index below 64"))?))
            }
            None => (*part, None),
        };
        if name.is_empty() {
            return Err("is not a field path".into());
        }
        let object = at.as_object_mut().ok_or_else(|| format!("`{name}` is inside a value that is not an object"))?;
        let last = k + 1 == parts.len();
        let slot = object.entry(name).or_insert(match index {
            Some(_) => Value::Array(Vec::new()),
            None if last => Value::Null,
            None => Value::Object(Map::new()),
        });
        at = match index {
            Some(i) => {
                let array = slot.as_array_mut().ok_or_else(|| format!("`{name}` is not a list"))?;
                while array.len() <= i {
                    array.push(Value::Object(Map::new()));
                }
                &mut array[i]
            }
            None => slot,
        };
        if last {
            *at = value;
            return Ok(());
        }
    }
    Ok(())
}

/// Makes the settings' relative paths (images, masks, start, weights) relative to `dir`.
pub fn resolve(settings: &mut Settings, dir: &Path) {
    let join = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    join(&mut settings.content);
    for s in &mut settings.styles {
        join(&mut s.image);
        s.region_mask.iter_mut().chain(s.source_mask.iter_mut()).for_each(join);
    }
    settings.start.iter_mut().chain(settings.network.weights.iter_mut()).for_each(join);
}

/// Every image a run reads, with its field.
fn image_fields(s: &Settings) -> Vec<(String, PathBuf)> {
    let mut files = vec![("content".to_string(), s.content.clone())];
    for (i, st) in s.styles.iter().enumerate() {
        files.push((format!("styles[{i}].image"), st.image.clone()));
        files.extend(st.region_mask.iter().map(|p| (format!("styles[{i}].region_mask"), p.clone())));
        files.extend(st.source_mask.iter().map(|p| (format!("styles[{i}].source_mask"), p.clone())));
    }
    files.extend(s.start.iter().map(|p| ("start".to_string(), p.clone())));
    files
}

/// Whether `path` is a readable regular file that starts like an image (decoding it is the
/// run's business).
fn looks_like_image(path: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    let (file, _) = image_io::open_regular_file(path, image_io::MAX_FILE_BYTES)?;
    let mut head = Vec::with_capacity(64);
    file.take(64).read_to_end(&mut head).map_err(|e| image_io::io_reason(&e))?;
    image::guess_format(&head).map(|_| ()).map_err(|_| "is not an image file".to_string())
}

/// A path made comparable: absolute, `.` and `..` folded (the file need not exist).
fn normalise(path: &Path) -> PathBuf {
    let absolute = if path.is_relative() {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    } else {
        path.to_path_buf()
    };
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Where the reason of an item's permanent failure is kept: `OUTPUT.failed`.
pub fn failure_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_os_string();
    name.push(".failed");
    PathBuf::from(name)
}

/// The settings as an item's output records them, for comparison: without the plan (laid out
/// per machine), the device asked for (`--device` for one run does not make the others stale)
/// and the version that wrote them.
fn comparable(settings: &Settings) -> Settings {
    let mut s = Settings { plan: None, impasto: String::new(), ..settings.clone() };
    s.network.device = Default::default();
    s
}

/// Where `item` stands: done (its output carries its settings), stale, failed or missing.
pub fn state(item: &Item) -> State {
    if item.output.exists() {
        return match Settings::read(&item.output) {
            Ok(recorded) if comparable(&recorded) == comparable(&item.settings) => State::Done,
            _ => State::Stale,
        };
    }
    match std::fs::read_to_string(failure_path(&item.output)) {
        Ok(reason) => State::Failed(reason.trim().to_string()),
        Err(_) => State::Missing,
    }
}

/// Which items a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every item, in order.
    All,
    /// One item.
    Index(usize),
    /// Items `i` with `i mod count == shard`.
    Shard {
        /// This worker's number, from 0.
        shard: usize,
        /// How many workers share the manifest.
        count: usize,
    },
}

/// The environment variables schedulers give an array task its index in, in the order they are
/// read.
pub const INDEX_VARIABLES: [&str; 4] =
    ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "AWS_BATCH_JOB_ARRAY_INDEX", "BATCH_TASK_INDEX"];

/// The selection from the flags (`--index`, `--shard K/N`) or else the scheduler's environment
/// (`get` reads a variable), with `offset` added to an index; the variable read is named in
/// errors.
pub fn select(
    index: Option<usize>,
    shard: Option<(usize, usize)>,
    offset: usize,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Selection> {
    if let Some((shard, count)) = shard {
        if count == 0 || shard >= count {
            return Err(Error::setting("shard", format!("is {shard}/{count}: K/N needs 0 <= K < N")));
        }
        return Ok(Selection::Shard { shard, count });
    }
    let (index, field) = match index {
        Some(i) => (i, "index".to_string()),
        // Google Cloud Batch gives every task an index, a job of one task too: that one runs all.
        None => match INDEX_VARIABLES
            .iter()
            .filter(|v| **v != "BATCH_TASK_INDEX" || get("BATCH_TASK_COUNT").is_none_or(|n| n.trim() != "1"))
            .find_map(|v| get(v).map(|value| (*v, value)))
        {
            Some((var, value)) => {
                let i = value.trim().parse::<usize>().map_err(|_| {
                    Error::setting(var, format!("is `{value}`: an array task's index is a whole number >= 0"))
                })?;
                (i, var.to_string())
            }
            None => return Ok(Selection::All),
        },
    };
    index
        .checked_add(offset)
        .map(Selection::Index)
        .ok_or_else(|| Error::setting(field, format!("is {index}: with the offset {offset} it is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_follow_rfc4180() {
        assert_eq!(parse_csv_row("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(parse_csv_row(r#""x, y","say ""hi""",z"#).unwrap(), ["x, y", "say \"hi\"", "z"]);
        assert_eq!(parse_csv_row("").unwrap(), [""]);
        assert!(parse_csv_row(r#""open"#).is_err());
        assert!(parse_csv_row(r#""a"b,c"#).is_err());
    }

    #[test]
    fn csv_columns_become_settings_fields() {
        let header: Vec<String> = [
            "content",
            "style",
            "output",
            "config.loss.style_weight",
            "styles[1].image",
            "styles[1].blend",
            "config.init",
        ]
        .map(String::from)
        .into();
        let row: Vec<String> = ["c.jpg", "s.jpg", "o.png", "1e3", "t.jpg", "2", "noise"].map(String::from).into();
        let o = Value::Object(csv_object(&header, &row).unwrap());
        assert_eq!(o["styles"][0]["image"], "s.jpg");
        assert_eq!(o["output"]["path"], "o.png");
        assert_eq!(o["styles"][1]["image"], "t.jpg");
        assert_eq!(o["styles"][1]["blend"], 2);
        assert_eq!(o["config"]["loss"]["style_weight"], 1e3);
        assert_eq!(o["config"]["init"], "noise");
        assert!(csv_object(&header, &row[..3]).unwrap_err().contains("fields"));
        let bad: Vec<String> = ["content", "style", "output", "styles[x].blend"].map(String::from).into();
        assert!(csv_object(&bad, &["c", "s", "o", "1"].map(String::from)).unwrap_err().contains("styles[x]"));
    }

    #[test]
    fn the_index_comes_from_flags_then_the_environment() {
        let none = |_: &str| None;
        assert_eq!(select(None, None, 0, none).unwrap(), Selection::All);
        assert_eq!(select(Some(3), None, 1000, none).unwrap(), Selection::Index(1003));
        let slurm = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "7".to_string());
        assert_eq!(select(None, None, 0, slurm).unwrap(), Selection::Index(7));
        assert_eq!(select(Some(1), None, 0, slurm).unwrap(), Selection::Index(1));
        // Kubernetes' variable is read first.
        let both = |v: &str| match v {
            "JOB_COMPLETION_INDEX" => Some("2".to_string()),
            "SLURM_ARRAY_TASK_ID" => Some("9".to_string()),
            _ => None,
        };
        assert_eq!(select(None, None, 10, both).unwrap(), Selection::Index(12));
        let bad = |v: &str| (v == "BATCH_TASK_INDEX").then(|| "-1".to_string());
        assert!(select(None, None, 0, bad).unwrap_err().to_string().starts_with("BATCH_TASK_INDEX is `-1`"));
        let google = |n: &'static str| {
            move |v: &str| match v {
                "BATCH_TASK_INDEX" => Some("0".to_string()),
                "BATCH_TASK_COUNT" => Some(n.to_string()),
                _ => None,
            }
        };
        assert_eq!(select(None, None, 0, google("1")).unwrap(), Selection::All);
        assert_eq!(select(None, None, 0, google("4")).unwrap(), Selection::Index(0));
        assert_eq!(select(None, Some((1, 3)), 0, none).unwrap(), Selection::Shard { shard: 1, count: 3 });
        assert!(select(None, Some((3, 3)), 0, none).is_err());
        assert!(select(Some(usize::MAX), None, 1, none).is_err());
    }
}
