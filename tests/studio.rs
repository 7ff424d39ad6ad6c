use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use impasto::studio::{Studio, StudioOptions};
use impasto::vgg::{Pooling, Vgg};
use serde_json::Value;

use crate::util::*;

/// A studio on a tiny random network, served on a free loopback port from a background thread.
struct Server {
    addr: SocketAddr,
    token: String,
    /// The studio, when it runs in this process.
    studio: Option<Arc<Studio>>,
}

fn start(dir: &Path) -> Server {
    start_with(StudioOptions::new(dir))
}

fn start_with(options: StudioOptions) -> Server {
    let net = Arc::new(Vgg::new(tiny_weights(21, [4, 4, 4, 4, 4]), Pooling::Max));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let studio = Studio::new(net, addr, options).unwrap();
    let token = studio.token().to_string();
    let serving = studio.clone();
    std::thread::spawn(move || runtime.block_on(impasto::studio::serve(serving, listener)));
    Server { addr, token, studio: Some(studio) }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Server {
    /// One HTTP/1.1 request with this server's Host header (or `host`), with the token when
    /// `token` is set; the whole response.
    fn raw(&self, method: &str, path: &str, body: &[u8], host: Option<&str>, token: bool) -> Reply {
        let host = host.map_or_else(|| self.addr.to_string(), str::to_string);
        let token = if token { format!("x-impasto-token: {}\r\n", self.token) } else { String::new() };
        let (status, body) = http(self.addr, method, path, &host, &token, body);
        Reply { status, body }
    }

    /// The memory the in-process studio's uploads and queued jobs hold.
    fn memory(&self) -> u64 {
        self.studio.as_ref().expect("an in-process studio").memory().0
    }

    fn get(&self, path: &str) -> Reply {
        self.raw("GET", path, b"", None, true)
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        self.raw("POST", path, body, None, true)
    }

    fn upload(&self, path: &Path) -> String {
        let r = self.post("/api/uploads", &std::fs::read(path).unwrap());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// Polls a job until it is done (or failed); its last status.
    fn wait(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let s = self.get(&format!("/api/jobs/{id}")).json();
            if s["state"] == "done" || s["state"] == "failed" {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "job {id} did not end: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn job(content: &str, style: &str, config: Value) -> Vec<u8> {
    serde_json::json!({ "content": content, "styles": [{ "image": style }], "config": config }).to_string().into_bytes()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// The token and the Host header guard every route; the page needs only the Host.
#[test]
fn token_and_host_are_required() {
    let dir = tempdir();
    let server = start(dir.path());
    let page = server.raw("GET", "/", b"", None, false);
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("impasto studio"));
    for (method, path) in [
        ("GET", "/api/gallery"),
        ("GET", "/api/jobs"),
        ("POST", "/api/uploads"),
        ("POST", "/api/jobs"),
        ("GET", "/api/uploads/u-0123456789abcdef"),
        ("GET", "/api/jobs/j-0123456789abcdef/events"),
        ("POST", "/api/jobs/j-0123456789abcdef/cancel"),
        ("DELETE", "/api/gallery/g-0123456789abcdef"),
    ] {
        let r = server.raw(method, path, b"x", None, false);
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(r.json()["error"].as_str().unwrap().contains("token"));
        let wrong = server.raw(method, &format!("{path}?token=0000"), b"x", None, false);
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
    }
    // The token in the query works as well as in the header.
    let r = server.raw("GET", &format!("/api/gallery?token={}", server.token), b"", None, false);
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));
    // Another Host (DNS rebinding): refused, even with the token, even for the page.
    for path in ["/", "/api/gallery"] {
        let r = server.raw("GET", path, b"", Some("attacker.example:80"), true);
        assert_eq!(r.status, 403, "{path}");
    }
    let port = server.addr.port();
    for (host, status) in [
        (format!("localhost:{port}"), 200),
        (format!("LOCALHOST:{port}"), 200),
        (format!("10.1.2.3:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        (format!("attacker.example:{port}"), 403),
        (format!("127.0.0.1.attacker.example:{port}"), 403),
        ("127.0.0.1:1".to_string(), 403),
        ("127.0.0.1".to_string(), 403),
        (String::new(), 403),
    ] {
        assert_eq!(server.raw("GET", "/api/gallery", b"", Some(&host), true).status, status, "Host: {host}");
    }
}

/// Uploads: an image is stored under a generated name; a non-image, a truncated image, a
/// decompression bomb and an oversized body are refused with a message and nothing stored; the
/// server keeps serving.
#[test]
fn uploads_are_checked_before_they_are_stored() {
    let dir = tempdir();
    let server = start(dir.path());
    let uploads = dir.path().join("uploads");
    let examples = files_in(&uploads);
    let id = server.upload(&fixture("content.png"));
    assert!(id.starts_with("u-") && files_in(&uploads) == examples + 1);
    assert_eq!(server.get(&format!("/api/uploads/{id}")).body, std::fs::read(fixture("content.png")).unwrap());
    let png = std::fs::read(fixture("content.png")).unwrap();
    let mut bomb = png_header(100_000, 100_000);
    png_chunk(&mut bomb, b"IDAT", &[0; 16]);
    for (what, body, needle) in [
        ("text", b"hello, not an image".to_vec(), "not a recognised image"),
        ("truncated", png[..png.len() / 2].to_vec(), "the upload"),
        ("bomb", bomb, "pixels"),
        ("empty", Vec::new(), "the upload"),
    ] {
        let r = server.post("/api/uploads", &body);
        assert_eq!(r.status, 400, "{what}");
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{what}: {message}");
        assert_eq!(files_in(&uploads), examples + 1, "{what} was stored");
    }
    let big = vec![0u8; impasto::studio::MAX_UPLOAD_BYTES + 1];
    assert_eq!(server.post("/api/uploads", &big).status, 413);
    assert_eq!(files_in(&uploads), examples + 1);
    assert_eq!(server.get("/api/gallery").status, 200, "still serving");
}

/// No route reads outside the work directory: ids are generated ones or nothing.
#[test]
fn traversal_attempts_find_nothing() {
    let dir = tempdir();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let server = start(&dir.path().join("studio"));
    for path in [
        "/api/uploads/..%2F..%2Fsecret.txt",
        "/api/uploads/../../secret.txt",
        "/api/uploads/u-0123456789abcdef",
        "/api/gallery/..%2F..%2F/secret.txt",
        "/api/gallery/g-0123456789abcdef/image.png",
        "/api/gallery/g-0123456789abcdef/..%2F..%2F..%2Fsecret.txt",
        "/api/gallery/%2E%2E/secret.txt",
        "/api/jobs/..%2Fsecret/preview.jpg",
    ] {
        let r = server.get(path);
        assert!(r.status == 404 || r.status == 400, "{path}: {}", r.status);
        assert!(!String::from_utf8_lossy(&r.body).contains("secret\""), "{path}");
        assert_ne!(r.body, b"secret", "{path}");
    }
}

/// A job from uploads to the gallery: bad settings are refused naming the field, a good run
/// streams its progress as server-sent events and ends in the gallery with its image (carrying
/// its settings), settings, thumbnail and losses; delete removes it; a restarted server on the
/// same directory lists what is left.
#[test]
fn a_job_runs_into_the_gallery_which_survives_a_restart() {
    let dir = tempdir();
    let server = start(dir.path());
    let (content, style) = (server.upload(&fixture("content.png")), server.upload(&fixture("style.png")));
    for (body, field) in [
        (job(&content, &style, serde_json::json!({ "size": 0 })), "config.size"),
        (job(&content, &style, serde_json::json!({ "loss": { "style_weight": -1 } })), "config.loss.style_weight"),
        (job(&content, &style, serde_json::json!({ "iteratoins": 3 })), "config.iteratoins"),
        (job(&content, "u-0123456789abcdef", serde_json::json!({})), "styles[0].image"),
        (job("../../etc/passwd", &style, serde_json::json!({})), "content"),
        (job(&content, &style, serde_json::json!({ "size": 8 })), "config.size"),
    ] {
        let r = server.post("/api/jobs", &body);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&body));
        assert_eq!(r.json()["field"], field, "{}", r.json());
    }
    let r =
        server.post("/api/jobs", &job(&content, &style, serde_json::json!({ "size": 48, "iterations": 6, "seed": 3 })));
    assert_eq!(r.status, 201, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The event stream runs to the end of the job.
    let events = server.get(&format!("/api/jobs/{id}/events"));
    let events = String::from_utf8_lossy(&events.body).into_owned();
    let statuses: Vec<Value> =
        events.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(statuses.iter().any(|s| s["state"] == "running" && s["iteration"].as_u64() > Some(0)), "{events}");
    let last = statuses.last().unwrap();
    assert_eq!(last["state"], "done", "{events}");
    assert!(last["preview"].as_u64() > Some(0), "a watched job makes previews");
    let entry = last["gallery"].as_str().unwrap().to_string();
    let listed = server.get("/api/gallery").json();
    assert_eq!(listed[0]["id"], entry.as_str());
    assert_eq!((listed[0]["width"].as_u64(), listed[0]["height"].as_u64()), (Some(48), Some(36)));
    assert!(listed[0]["command"].as_str().unwrap().starts_with("impasto stylize "));
    let png = server.get(&format!("/api/gallery/{entry}/image.png"));
    assert_eq!(png.status, 200);
    let carried =
        impasto::image_io::metadata::read_settings(&png.body).unwrap().expect("the image carries its settings");
    let settings: Value = serde_json::from_str(&carried).unwrap();
    assert_eq!((settings["config"]["size"].as_u64(), settings["config"]["seed"].as_u64()), (Some(48), Some(3)));
    assert_eq!(server.get(&format!("/api/gallery/{entry}/settings.json")).json(), settings);
    assert_eq!(server.get(&format!("/api/gallery/{entry}/losses.json")).json().as_array().unwrap().len(), 6);
    assert_eq!(server.get(&format!("/api/gallery/{entry}/thumbnail.jpg")).status, 200);
    let tif = server.get(&format!("/api/gallery/{entry}/image.tif"));
    assert_eq!(tif.status, 200);
    let (from_tif, from_png) = (
        impasto::image_io::load_bytes(&tif.body, "tif").unwrap(),
        impasto::image_io::load_bytes(&png.body, "png").unwrap(),
    );
    assert_eq!(from_tif, from_png, "the TIFF has the PNG's pixels");
    assert_eq!(
        impasto::image_io::metadata::read_settings(&tif.body)
            .unwrap()
            .map(|t| serde_json::from_str::<Value>(&t).unwrap()),
        Some(settings.clone())
    );
    assert_eq!(server.get(&format!("/api/gallery/{entry}/entry.json")).status, 404, "only the listed files");

    // A second picture, then delete the first.
    let r = server.post("/api/jobs", &job(&content, &style, serde_json::json!({ "size": 32, "iterations": 2 })));
    let second = server.wait(r.json()["id"].as_str().unwrap());
    assert_eq!(server.raw("DELETE", &format!("/api/gallery/{entry}"), b"", None, true).status, 204);
    assert_eq!(server.raw("DELETE", &format!("/api/gallery/{entry}"), b"", None, true).status, 404);
    let restarted = start(dir.path());
    let listed = restarted.get("/api/gallery").json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], second["gallery"]);
}

/// Jobs run one at a time in order; a queued job can be cancelled; a running one stops after its
/// current evaluation and still goes to the gallery, marked stopped.
#[test]
fn jobs_queue_and_cancel() {
    let dir = tempdir();
    let server = start(dir.path());
    let (content, style) = (server.upload(&fixture("content.png")), server.upload(&fixture("style.png")));
    let submit = |iterations: u64| {
        let r = server.post(
            "/api/jobs",
            &job(&content, &style, serde_json::json!({ "size": 32, "iterations": iterations, "scales": "off" })),
        );
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()["id"].as_str().unwrap().to_string()
    };
    // Submitted from several threads at once.
    let ids: Vec<String> = std::thread::scope(|s| {
        let long = submit(100_000);
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| submit(3))).collect();
        std::iter::once(long).chain(handles.into_iter().map(|h| h.join().unwrap())).collect()
    });
    let start_wait = Instant::now();
    while server.get(&format!("/api/jobs/{}", ids[0])).json()["iteration"].as_u64() < Some(2) {
        assert!(start_wait.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    let active = server.get("/api/jobs").json();
    let states: Vec<&str> = active.as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["running", "queued", "queued", "queued"], "{active}");
    assert_eq!(active[0]["id"], ids[0].as_str());
    // Cancel a queued job, then the running one.
    assert_eq!(server.post(&format!("/api/jobs/{}/cancel", ids[2]), b"").status, 202);
    assert_eq!(server.get(&format!("/api/jobs/{}", ids[2])).json()["stop"], "cancelled");
    assert_eq!(server.post(&format!("/api/jobs/{}/cancel", ids[0]), b"").status, 202);
    let first = server.wait(&ids[0]);
    assert_eq!(first["stop"], "stopped", "{first}");
    assert!(first["gallery"].is_string(), "a stopped run keeps its best image");
    for id in [&ids[1], &ids[3]] {
        let s = server.wait(id);
        assert_eq!((s["state"].as_str(), s["stop"].as_str()), (Some("done"), Some("finished")), "{s}");
    }
    assert_eq!(server.post(&format!("/api/jobs/{}/cancel", ids[1]), b"").status, 409, "already ended");
    assert_eq!(server.get("/api/gallery").json().as_array().unwrap().len(), 3);
    assert_eq!(server.get("/api/jobs/j-0123456789abcdef").status, 404);
}

/// The bundled examples are uploads a job can use, the same ids at every start.
#[test]
fn examples_are_ready_to_use() {
    let dir = tempdir();
    let server = start(dir.path());
    let examples = server.get("/api/examples").json();
    let examples = examples.as_array().unwrap();
    assert!(examples.iter().any(|e| e["role"] == "content") && examples.iter().any(|e| e["role"] == "style"));
    let id = |role: &str| examples.iter().find(|e| e["role"] == role).unwrap()["id"].as_str().unwrap().to_string();
    let photo = server.get(&format!("/api/uploads/{}", id("content")));
    assert_eq!(photo.status, 200);
    assert!(impasto::image_io::load_bytes(&photo.body, "example").is_ok());
    let r = server
        .post("/api/jobs", &job(&id("content"), &id("style"), serde_json::json!({ "size": 24, "iterations": 1 })));
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(server.wait(r.json()["id"].as_str().unwrap())["state"], "done");
    assert_eq!(start(dir.path()).get("/api/examples").json(), serde_json::Value::Array(examples.clone()));
}

/// A WebDriver session on Debian's Chromium through chromedriver.
struct Browser {
    driver: std::process::Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (with a message) when chromedriver is not installed and `IMPASTO_REQUIRE_BROWSER`
    /// is not set; CI sets it, so there the test cannot skip.
    fn start() -> Option<Browser> {
        let driver =
            ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].into_iter().find(|p| Path::new(p).exists());
        let Some(driver) = driver else {
            assert!(std::env::var_os("IMPASTO_REQUIRE_BROWSER").is_none(), "chromedriver is not installed");
            eprintln!("skipped: no chromedriver (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempdir();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1100",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut browser = Browser { driver: child, addr, session: String::new(), _profile: profile };
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args } } } });
        let reply = browser.call("POST", "/session", caps);
        browser.session = reply["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {reply}")).to_string();
        Some(browser)
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let (_, reply) =
            http(self.addr, method, path, &self.addr.to_string(), "Content-Type: application/json\r\n", &body);
        let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        v["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Value) -> Value {
        let value = self.call(method, &format!("/session/{}{path}", self.session), body);
        assert!(value.get("error").is_none(), "{method} {path}: {value}");
        value
    }

    fn find(&self, css: &str) -> String {
        let v = self.session("POST", "/element", serde_json::json!({ "using": "css selector", "value": css }));
        v.as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).unwrap().to_string()
    }

    fn exec(&self, script: &str) -> Value {
        self.session("POST", "/execute/sync", serde_json::json!({ "script": script, "args": [] }))
    }

    /// Waits until `script` returns something truthy; returns it.
    fn until(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.exec(script);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{what}: {}",
                self.exec("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), Value::Null);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> =
        text.bytes().filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |n, (i, d)| n | (*d as u32) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(c.len().saturating_sub(1))
        })
        .collect()
}

/// The page in a real headless Chromium: upload a photo and a painting through the file
/// inputs, paint the style's region with the brush (pointer events on the canvas), see a field
/// error next to its field, start a run at 96 px, see the preview change and the progress
/// advance, stop it, find it in the gallery with the painted mask in its settings, download it,
/// and still find it after a reload. Keeps a screenshot in
/// `target/tmp/studio.png`.
#[test]
fn the_page_works_in_chromium() {
    let Some(browser) = Browser::start() else { return };
    let dir = tempdir();
    let server = start(dir.path());
    let url = format!("http://{}/?token={}", server.addr, server.token);
    browser.session("POST", "/url", serde_json::json!({ "url": url }));
    browser.until("the page", "return document.title === 'impasto studio'");
    browser.until("the examples", "return document.querySelectorAll('#examples img').length");
    for (input, file) in [("#content-file", "content.png"), ("#style-file", "style.png")] {
        let e = browser.find(input);
        browser.session("POST", &format!("/element/{e}/value"), serde_json::json!({ "text": s(&fixture(file)) }));
    }
    browser
        .until("the uploads", "return document.querySelectorAll('#content-thumb img, #style-list img').length === 2");
    // The instant preview appears before Start is pressed, and again when the colour mode changes.
    let fast = "const i = document.getElementById('fast-preview'); return i.complete && i.naturalWidth > 0 ? Number(i.dataset.version) : 0";
    let first = browser.until("the instant preview", fast).as_u64().unwrap();
    assert!(browser.exec("return document.getElementById('stop').disabled").as_bool().unwrap(), "a job started");
    let (w, h) = (
        browser.exec("return document.getElementById('fast-preview').naturalWidth"),
        browser.exec("return document.getElementById('fast-preview').naturalHeight"),
    );
    assert!(w.as_u64().unwrap() >= 16 && h.as_u64().unwrap() >= 16, "{w}x{h}");
    browser.exec(
        "const c = document.getElementById('colour'); c.value = 'luminance'; c.dispatchEvent(new Event('change'));",
    );
    browser.until("a newer instant preview", &format!("const i = document.getElementById('fast-preview'); return i.complete && Number(i.dataset.version) > {first}"));
    // A bad value is shown next to its field, and nothing runs.
    browser.exec("document.getElementById('size').value = 0; document.getElementById('start').click();");
    let message = browser
        .until("the size error", "return document.querySelector('.error[data-field=\"config.size\"]').textContent");
    assert!(message.as_str().unwrap().contains("config.size must be between 1"), "{message}");
    // Paint the left half of the photo for the style with the brush.
    browser.exec(
        "[...document.querySelectorAll('#style-list button')].find(b => b.textContent === 'paint region').click();",
    );
    browser.until("the canvas", "return document.getElementById('painter-canvas').width");
    browser.exec(
        "const c = document.getElementById('painter-canvas'); const r = c.getBoundingClientRect();
         document.getElementById('brush').value = 80;
         const at = (type, x, y) => c.dispatchEvent(new PointerEvent(type, { clientX: r.left + x, clientY: r.top + y, bubbles: true }));
         at('pointerdown', 10, 10);
         for (let y = 10; y < r.height; y += 20) for (let x = 10; x < r.width / 2 - 40; x += 20) at('pointermove', x, y);
         window.dispatchEvent(new PointerEvent('pointerup'));
         document.getElementById('done-painting').click();",
    );
    browser.until(
        "the painted region",
        "return [...document.querySelectorAll('#style-list button')].some(b => b.textContent === 'region painted')",
    );
    browser.exec(
        "document.getElementById('size').value = 96; document.getElementById('iterations').value = 100000;
         document.getElementById('start').click();",
    );
    // The preview changes and the progress advances while it runs.
    let preview = "const m = document.getElementById('preview').src.match(/v=(\\d+)/); return m ? Number(m[1]) : 0";
    let first = browser.until("a first preview", preview).as_u64().unwrap();
    let progress = "return Number(document.getElementById('bar').value)";
    let at = browser.until("the progress", progress).as_f64().unwrap();
    let newer = format!(
        "const m = document.getElementById('preview').src.match(/v=(\\d+)/); return m && Number(m[1]) > {first}"
    );
    browser.until("a newer preview", &newer);
    browser.until("more progress", &format!("return Number(document.getElementById('bar').value) > {at}"));
    assert!(
        browser
            .exec("return document.getElementById('progress-text').textContent")
            .as_str()
            .unwrap()
            .starts_with("running: iteration")
    );
    let shot = browser.session("GET", "/screenshot", Value::Null);
    let png = base64_decode(shot.as_str().unwrap());
    assert!(impasto::image_io::load_bytes(&png, "screenshot").is_ok());
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("studio.png"), &png).unwrap();
    // Stop keeps the best image so far, in the gallery, with a download link to the PNG.
    browser.exec("document.getElementById('stop').click();");
    browser.until("the stop", "return document.getElementById('progress-text').textContent.includes('(stopped)')");
    browser.until("the gallery", "return document.querySelectorAll('#gallery figure').length === 1");
    let href = browser.exec("const a = document.querySelector('#gallery a'); return a.download ? a.href : ''");
    let path = href.as_str().unwrap().splitn(4, '/').nth(3).map(|p| format!("/{p}")).expect("a download link");
    let download = server.raw("GET", &path, b"", None, false);
    assert_eq!(download.status, 200, "{path}");
    let picture = impasto::image_io::load_bytes(&download.body, "download").unwrap();
    assert_eq!((picture.width, picture.height), (96, 72));
    assert!(impasto::image_io::metadata::read_settings(&download.body).unwrap().is_some());
    // The picture's settings hold the painted mask: white on the left, black on the right.
    let entry = server.get("/api/gallery").json()[0]["id"].as_str().unwrap().to_string();
    let settings = server.get(&format!("/api/gallery/{entry}/settings.json")).json();
    let mask_path = settings["styles"][0]["region_mask"].as_str().expect("a region mask");
    let mask = impasto::image_io::load(Path::new(mask_path)).unwrap();
    let (w, h) = (mask.width, mask.height);
    let at = |x: usize, y: usize| mask.data[y * w + x];
    assert!(
        at(w / 8, h / 2) > 200.0 && at(7 * w / 8, h / 2) < 50.0,
        "{w}x{h}: {} {}",
        at(w / 8, h / 2),
        at(7 * w / 8, h / 2)
    );
    // A reload finds the gallery again.
    browser.session("POST", "/refresh", serde_json::json!({}));
    browser.until("the gallery after a reload", "return document.querySelectorAll('#gallery figure').length === 1");
}

/// Hostile input, round two, on the studio: requests that took the server down or held memory
/// forever are answered, with the field named where there is one, and the server keeps serving;
/// a cancelled job's images are let go; Host headers are one and ours; the limits hold.
#[test]
fn hostile_requests_are_answered_and_the_studio_keeps_serving() {
    let dir = tempdir();
    let server = start_with(StudioOptions { timeout: Duration::from_secs(1), ..StudioOptions::new(dir.path()) });
    let (content, style) = (server.upload(&fixture("content.png")), server.upload(&fixture("style.png")));
    let refused = |body: Vec<u8>, status: u16, field: Option<&str>, text: &str| {
        let r = server.post("/api/jobs", &body);
        let v = r.json();
        assert_eq!(r.status, status, "{v}");
        assert_eq!(v["field"].as_str(), field, "{v}");
        assert!(v["error"].as_str().unwrap().contains(text), "{v}\nwanted {text}");
    };
    // 4a: thousands of styles, thousands of layers.
    let styles: Vec<Value> = (0..3000).map(|_| serde_json::json!({ "image": style })).collect();
    let many = serde_json::json!({ "content": content, "styles": styles }).to_string().into_bytes();
    refused(many, 400, Some("styles"), "at most 16 a job");
    let layers = serde_json::json!({ "size": 32, "loss": { "style_layers": vec!["relu5_1"; 5000] } });
    refused(job(&content, &style, layers), 400, Some("config.loss.style_layers"), "has 5000 layers");
    // 7: trailing data. 8: the field named. 10: iterations.
    let mut trailing = job(&content, &style, serde_json::json!({ "size": 32 }));
    trailing.extend_from_slice(b" garbage");
    refused(trailing, 400, None, "more after the job");
    // The instant preview's requests are read the same way.
    let mut preview = serde_json::json!({ "content": content, "style": style }).to_string().into_bytes();
    preview.extend_from_slice(b" garbage");
    let r = server.post("/api/fast", &preview);
    assert_eq!(r.status, 400, "{}", r.json());
    assert!(r.json()["error"].as_str().unwrap().contains("more after the request"), "{}", r.json());
    refused(job(&content, &style, serde_json::json!({ "size": 65535 })), 400, Some("config.size"), "memory");
    let unknown = serde_json::json!({ "size": 32, "loss": { "style_layers": ["relu9_9"] } });
    refused(job(&content, &style, unknown), 400, Some("config.loss.style_layers"), "unknown layer 'relu9_9'");
    refused(
        job(&content, &style, serde_json::json!({ "iterations": 1_000_000 })),
        400,
        Some("config.iterations"),
        "at most 100000 a job",
    );
    refused(
        job(&content, &style, serde_json::json!({ "iterations": u64::MAX })),
        400,
        Some("config.iterations"),
        "between 1 and",
    );
    let no_such =
        serde_json::json!({ "content": content, "styles": [{ "image": style, "source_mask": "u-0123456789abcdef" }] });
    refused(no_such.to_string().into_bytes(), 400, Some("styles[0].source_mask"), "no such upload");
    // 5: queued jobs behind a running one, submitted and cancelled in a loop, give their memory
    // back; 16 waiting at most.
    let run = |iterations: u64| {
        server.post(
            "/api/jobs",
            &job(&content, &style, serde_json::json!({ "size": 32, "iterations": iterations, "scales": "off" })),
        )
    };
    let long = run(100_000).json()["id"].as_str().unwrap().to_string();
    let idle = server.memory();
    for _ in 0..40 {
        let r = run(3);
        assert_eq!(r.status, 201, "{}", r.json());
        assert!(server.memory() > idle, "a queued job holds its images");
        assert_eq!(server.post(&format!("/api/jobs/{}/cancel", r.json()["id"].as_str().unwrap()), b"").status, 202);
        assert_eq!(server.memory(), idle, "and lets them go when cancelled");
    }
    let queued: Vec<Reply> = (0..17).map(|_| run(3)).collect();
    assert!(queued[..16].iter().all(|r| r.status == 201));
    assert_eq!(queued[16].status, 503, "{}", queued[16].json());
    for r in &queued[..16] {
        server.post(&format!("/api/jobs/{}/cancel", r.json()["id"].as_str().unwrap()), b"");
    }
    server.post(&format!("/api/jobs/{long}/cancel"), b"");
    server.wait(&long);
    assert_eq!(server.memory(), 0);
    // 12: one Host header, and an absolute-form request line names this server.
    let raw = |text: String| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(text.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let (addr, token) = (server.addr, &server.token);
    let two = raw(format!(
        "GET /api/gallery HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example:{}\r\nx-impasto-token: {token}\r\nConnection: close\r\n\r\n",
        addr.port()
    ));
    assert!(two.starts_with("HTTP/1.1 403"), "{two}");
    let absolute = raw(format!(
        "GET http://evil.example:{}/api/gallery HTTP/1.1\r\nHost: {addr}\r\nx-impasto-token: {token}\r\nConnection: close\r\n\r\n",
        addr.port()
    ));
    assert!(absolute.starts_with("HTTP/1.1 403"), "{absolute}");
    let ours = raw(format!(
        "GET http://{addr}/api/gallery HTTP/1.1\r\nHost: {addr}\r\nx-impasto-token: {token}\r\nConnection: close\r\n\r\n"
    ));
    assert!(ours.starts_with("HTTP/1.1 200"), "{ours}");
    // An upload over the limit is answered from its Content-Length, before any body.
    let big = raw(format!(
        "POST /api/uploads HTTP/1.1\r\nHost: {addr}\r\nx-impasto-token: {token}\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n"
    ));
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    // Idle, slow and stalled connections are closed after the timeout (1 s here).
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(idle.read(&mut [0u8; 16]).unwrap_or(0), 0, "the idle connection is closed");
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "slow headers are not served");
    let stalled = raw_start(
        server.addr,
        &format!(
            "POST /api/uploads HTTP/1.1\r\nHost: {addr}\r\nx-impasto-token: {token}\r\nContent-Length: 1000000\r\n\r\nabc"
        ),
    );
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(started.elapsed() < Duration::from_secs(9), "{:?}", started.elapsed());
    // And it still serves.
    assert_eq!(server.get("/api/gallery").status, 200);
    assert_eq!(server.memory(), 0, "the stalled upload's memory went back");
}

/// Sends `text` and reads what comes back until the server closes or 10 s pass.
fn raw_start(addr: SocketAddr, text: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The load test: `impasto serve` in a process of its own, with a 256 MiB budget and a 2 s
/// timeout, while uploads of 60 MB are held open, jobs are submitted and cancelled in a loop
/// behind a running one, and slow clients connect. Its resident memory stays under the ceiling
/// the README states (the budget, plus the network and the program: 256 MiB + 0.6 GiB here),
/// the uploads that do not fit are answered 503, and once the clients have gone the budget is
/// empty again and the server serves on. Bounded: 8 held uploads, 60 jobs, 200 slow clients,
/// about half a minute, loopback only.
#[test]
fn the_studio_holds_its_memory_under_load() {
    use std::io::{Read, Write};
    let dir = tempdir();
    let weights = real_weights_path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_impasto"))
        .args(["serve", "--port", &port.to_string(), "--dir", s(&dir.path().join("studio")), "--weights", s(&weights)])
        .args(["--device", "cpu", "--memory", "256", "--timeout", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    {
        let mut out = serve.stdout.take().unwrap();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            url.push(b[0] as char);
        }
    }
    let token = url.split("token=").nth(1).unwrap_or_else(|| panic!("{url}")).to_string();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pid = serve.id();
    let rss = move || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        kib << 10
    };
    let server = Server { addr, token: token.clone(), studio: None };
    let (content, style) = (server.upload(&fixture("content.png")), server.upload(&fixture("style.png")));
    let peak = std::sync::Mutex::new(rss());
    let sample = || {
        let now = rss();
        let mut p = peak.lock().unwrap();
        *p = (*p).max(now);
    };
    // Uploads declaring 60 MB, sending 40 MB and then stalling.
    let chunk = vec![0u8; 1 << 20];
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..8 {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let head = format!(
            "POST /api/uploads HTTP/1.1\r\nHost: {addr}\r\nx-impasto-token: {token}\r\nContent-Length: 60000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut sent = 0;
        while sent < 40 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
            sent += 1;
        }
        sample();
        held.push(stream);
    }
    // The ones that found no room were answered 503 at once.
    for stream in &mut held {
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut b = [0u8; 12];
        if stream.read(&mut b).unwrap_or(0) > 0 && String::from_utf8_lossy(&b).contains("503") {
            busy += 1;
        }
    }
    assert!(busy >= 4, "{busy} of 8 held uploads refused (4 of 60 MB fit in 256 MiB)");
    // Slow clients.
    let slow: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .map(|mut s| {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHo");
            s
        })
        .collect();
    // Jobs submitted and cancelled behind a running one.
    let submit = |iterations: u64| {
        server.post(
            "/api/jobs",
            &job(&content, &style, serde_json::json!({ "size": 64, "iterations": iterations, "scales": "off" })),
        )
    };
    let long = submit(100_000);
    assert_eq!(long.status, 201, "{}", String::from_utf8_lossy(&long.body));
    for _ in 0..60 {
        let r = submit(5);
        if r.status == 201 {
            server.post(&format!("/api/jobs/{}/cancel", r.json()["id"].as_str().unwrap()), b"");
        }
        sample();
    }
    server.post(&format!("/api/jobs/{}/cancel", long.json()["id"].as_str().unwrap()), b"");
    drop(held);
    drop(slow);
    std::thread::sleep(Duration::from_secs(3));
    sample();
    let peak = *peak.lock().unwrap();
    let ceiling: u64 = (256 << 20) + (600 << 20);
    eprintln!("studio under load: peak resident {} MiB (ceiling {} MiB)", peak >> 20, ceiling >> 20);
    assert!(peak < ceiling, "peak resident {} MiB over the ceiling {} MiB", peak >> 20, ceiling >> 20);
    assert_eq!(server.get("/api/gallery").status, 200, "still serving");
    // SAFETY: kill sends a signal to the child this test started, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = serve.wait();
}
