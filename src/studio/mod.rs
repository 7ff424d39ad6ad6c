//! impasto studio: a local web app over the library (`impasto serve`). An axum server on tokio
//! serves the page (from the binary: no network needed) and a JSON API; the runs happen on one
//! worker thread ([`jobs`]) on the one loaded network, and their progress reaches the page as
//! server-sent events. Uploads and finished pictures live in the work directory ([`store`]).
//!
//! Security: the server listens on loopback unless told otherwise; every `/api` request carries
//! the random token printed with the URL (`?token=` or the `x-impasto-token` header); every
//! request has exactly one `Host` header, which must be `localhost` or an IP address with this
//! server's port (a DNS-rebinding page comes under its own domain name), and so must the
//! authority of an absolute-form request line; uploads are limited in bytes
//! ([`MAX_UPLOAD_BYTES`], refused from their `Content-Length` before the body is read) and
//! decoded under the image limits before anything is stored; clients name stored files only by
//! generated ids.
//!
//! Bounds: what uploads in flight and queued jobs hold in memory comes out of one budget
//! ([`budget`], `StudioOptions::memory`; a request that does not fit is answered 503); a job
//! takes at most [`MAX_JOB_STYLES`] styles and [`MAX_JOB_ITERATIONS`] evaluations, at most
//! [`MAX_QUEUED`] wait; a connection that sends nothing for `StudioOptions::timeout` (idle, slow
//! headers, a stalled upload) is closed, and at most [`MAX_CONNECTIONS`] are open at once.
//!
//! API (all JSON; errors are `{"error": message, "field": path?}` with a 4xx status):
//! - `POST /api/uploads` (the image's bytes) → `{"id", "width", "height"}`
//! - `GET /api/uploads/{id}` → the uploaded bytes; `GET /api/examples` the bundled examples
//!   (`{name, role, id}`, already uploads)
//! - `POST /api/jobs` (`{"content": id, "styles": [{"image": id, "blend", "region_mask": id}],
//!   "config": StyleConfig}`) → the job's status; `GET /api/jobs` the running and queued jobs
//! - `GET /api/jobs/{id}` status, `/api/jobs/{id}/events` server-sent events of it,
//!   `/api/jobs/{id}/preview.jpg`, `POST /api/jobs/{id}/cancel`
//! - `GET /api/gallery`, `GET /api/gallery/{id}/{image.png|image.tif|thumbnail.jpg|settings.json|losses.json}`,
//!   `DELETE /api/gallery/{id}`

pub mod budget;
pub mod jobs;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::device::Device;
use crate::engine::Backend;
use crate::image_io::{self, DecodeLimits};
use crate::loss::Style;
use crate::settings::{NetworkSettings, Settings};
use crate::transfer::{StyleConfig, Stylizer};

use jobs::Jobs;
use store::Store;

/// The largest upload, in bytes.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;
/// The most pixels an uploaded image may have (checked before it is decoded).
pub const MAX_UPLOAD_PIXELS: u64 = 50_000_000;
/// The most styles one job takes.
pub const MAX_JOB_STYLES: usize = 16;
/// The most evaluations one job makes (over all its scales).
pub const MAX_JOB_ITERATIONS: usize = 100_000;
/// The most jobs waiting behind the running one.
pub const MAX_QUEUED: usize = 16;
/// The most connections open at once (more are closed as they come).
pub const MAX_CONNECTIONS: usize = 256;
/// The default memory budget for uploads in flight and queued jobs.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// The default time a connection may send nothing before it is closed.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const PAGE: &str = include_str!("page.html");

/// The largest job request, in bytes (a job is a few hundred).
const MAX_JOB_BYTES: usize = 1 << 20;

/// The example images served with the page: name, role, bytes.
const EXAMPLES: &[(&str, &str, &[u8])] = &[
    ("tubingen.jpg", "content", include_bytes!("../../examples/tubingen.jpg")),
    ("kodim23.png", "content", include_bytes!("../../examples/kodim23.png")),
    ("starry_night.jpg", "style", include_bytes!("../../examples/starry_night.jpg")),
    ("shipwreck.jpg", "style", include_bytes!("../../examples/shipwreck.jpg")),
];

/// A running studio's shared state.
pub struct Studio {
    token: String,
    /// The port requests must name in their `Host` header.
    port: u16,
    store: Arc<Store>,
    jobs: Arc<Jobs>,
    net: Arc<dyn Backend + Send>,
    network: NetworkSettings,
    /// The bundled examples as uploads: `{name, role, id}`.
    examples: Vec<serde_json::Value>,
    /// What uploads in flight and queued jobs hold.
    budget: Arc<budget::Budget>,
    timeout: std::time::Duration,
    /// The fast networks for the instant preview, loaded on the first preview (a fetch, the
    /// first time on a machine), and the lock that makes previews one at a time.
    fast: std::sync::Mutex<Option<Arc<crate::fast::FastNetworks>>>,
}

/// The longest side of an instant preview, in pixels.
pub const MAX_PREVIEW_SIDE: usize = 512;

/// How to start a studio.
pub struct StudioOptions {
    /// The work directory (uploads, gallery).
    pub dir: PathBuf,
    /// The weights file the network was loaded from (recorded in each picture's settings).
    pub weights: Option<PathBuf>,
    /// The device the network was put on (recorded in each picture's settings).
    pub device: Device,
    /// The token; `None`: a random one.
    pub token: Option<String>,
    /// Bytes uploads in flight and queued jobs may hold ([`DEFAULT_MEMORY`]).
    pub memory: u64,
    /// How long a connection may send nothing ([`DEFAULT_TIMEOUT`]).
    pub timeout: std::time::Duration,
}

impl StudioOptions {
    /// The options for a work directory, every other at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StudioOptions {
            dir: dir.into(),
            weights: None,
            device: Device::default(),
            token: None,
            memory: DEFAULT_MEMORY,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Studio {
    /// A studio on `net` listening at `addr`.
    pub fn new(net: Arc<dyn Backend + Send>, addr: SocketAddr, options: StudioOptions) -> std::io::Result<Arc<Self>> {
        let store = Arc::new(Store::open(&options.dir)?);
        let mut examples = Vec::new();
        for (name, role, bytes) in EXAMPLES {
            let id = store.add_example(name, bytes).map_err(std::io::Error::other)?;
            examples.push(serde_json::json!({ "name": name, "role": role, "id": id }));
        }
        Ok(Arc::new(Studio {
            examples,
            token: options.token.unwrap_or_else(|| store::hex(&store::random_bytes::<16>())),
            port: addr.port(),
            jobs: Jobs::start(net.clone(), store.clone()),
            net,
            store,
            network: NetworkSettings { weights: options.weights, device: options.device, ..NetworkSettings::default() },
            budget: budget::Budget::new(options.memory),
            timeout: options.timeout,
            fast: std::sync::Mutex::new(None),
        }))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The page's address, with the token.
    pub fn url(&self, addr: SocketAddr) -> String {
        format!("http://{addr}/?token={}", self.token)
    }

    /// The memory uploads in flight and queued jobs hold now, and the budget's limit.
    pub fn memory(&self) -> (u64, u64) {
        (self.budget.used(), self.budget.limit())
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/uploads", post(upload))
            .route("/examples", get(|State(s): State<Arc<Studio>>| async move { axum::Json(s.examples.clone()) }))
            .route("/uploads/{id}", get(uploaded))
            .route("/jobs", post(submit).get(active))
            .route("/fast", post(fast_preview))
            .route("/jobs/{id}", get(status))
            .route("/jobs/{id}/events", get(events))
            .route("/jobs/{id}/preview.jpg", get(preview))
            .route("/jobs/{id}/cancel", post(cancel))
            .route("/gallery", get(gallery))
            .route("/gallery/{id}", axum::routing::delete(delete))
            .route("/gallery/{id}/{file}", get(gallery_file))
            .layer(DefaultBodyLimit::disable())
            .route_layer(middleware::from_fn_with_state(self.clone(), require_token));
        Router::new()
            .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
            .nest("/api", api)
            .layer(middleware::from_fn_with_state(self.clone(), require_host))
            .with_state(self.clone())
    }
}

/// Serves `studio` on `listener` until the process ends: HTTP/1.1 with keep-alive, each
/// connection closed when it sends no request head for the studio's timeout (idle or slow),
/// at most [`MAX_CONNECTIONS`] at once.
pub async fn serve(studio: Arc<Studio>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = studio.router();
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, a connection reset before it was accepted: wait a little
            // and go on serving.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let timeout = studio.timeout;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// An API error: a status and `{"error", "field"}`.
struct ApiError(StatusCode, String, Option<String>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1, "field": self.2 }))).into_response()
    }
}

/// A settings field as the job request names it (`config.size`, `styles[0].region_mask`).
fn request_field(field: &str) -> String {
    if field.starts_with("styles") || field.starts_with("content") {
        field.to_string()
    } else {
        format!("config.{field}")
    }
}

impl From<crate::Error> for ApiError {
    /// A library error: a setting's field becomes its path in the job request, and a run too
    /// large for the memory names the first setting to lower.
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Setting { field, message } => {
                let field = request_field(&field);
                ApiError(StatusCode::BAD_REQUEST, format!("{field} {message}"), Some(field))
            }
            crate::Error::Memory { message, lower } => {
                let fields: Vec<String> = lower.iter().map(|f| request_field(f)).collect();
                let text = format!("{message}; lower {}", fields.join(" or "));
                ApiError(StatusCode::BAD_REQUEST, text, fields.into_iter().next())
            }
            e => ApiError(StatusCode::BAD_REQUEST, e.to_string(), None),
        }
    }
}

/// The studio is full: the memory for uploads and queued jobs is taken, or the queue is.
fn busy(what: &str) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the studio is busy: {what}; try again when a job has ended"),
        None,
    )
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such {what}"), None)
}

/// Whether a `Host` header names this server: `localhost` or an IP address, with its port. A
/// DNS-rebinding page reaches the server under its own domain name, which is refused; an IP
/// address (a LAN address, with `--host`) names no one else.
fn names_this_server(host: &str, port: u16) -> bool {
    let Some((name, p)) = host.rsplit_once(':') else { return false };
    if p.parse::<u16>() != Ok(port) {
        return false;
    }
    let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn require_host(State(s): State<Arc<Studio>>, request: Request, next: Next) -> Response {
    let refuse = |what: String| ApiError(StatusCode::FORBIDDEN, what, None).into_response();
    let hosts: Vec<&str> = request.headers().get_all(header::HOST).iter().map(|h| h.to_str().unwrap_or("")).collect();
    if hosts.len() != 1 {
        return refuse(format!("a request has one Host header, this one has {}", hosts.len()));
    }
    if !names_this_server(hosts[0], s.port) {
        return refuse(format!("the Host header '{}' is not this server", hosts[0]));
    }
    // An absolute-form request line names its host itself (and it is the one that counts).
    if let Some(authority) = request.uri().authority()
        && !names_this_server(authority.as_str(), s.port)
    {
        return refuse(format!("the request names '{authority}', which is not this server"));
    }
    next.run(request).await
}

async fn require_token(State(s): State<Arc<Studio>>, request: Request, next: Next) -> Response {
    let from_query =
        request.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string));
    let from_header = request.headers().get("x-impasto-token").and_then(|h| h.to_str().ok()).map(str::to_string);
    let given = from_header.or(from_query).unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), s.token.as_bytes()) {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "a missing or wrong token: use the address impasto serve printed".into(),
            None,
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request's body, at most `max` bytes, read as it comes into memory reserved from the
/// studio's budget: refused from its `Content-Length` before it is read when that is too large
/// (413) or does not fit (503), and when it stalls for the studio's timeout (408).
async fn read_body(s: &Studio, request: Request, max: usize) -> Result<(Vec<u8>, budget::Reservation), ApiError> {
    use futures_util::StreamExt;
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {max} bytes"), None);
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut held = s.budget.reserve(declared.unwrap_or(0)).ok_or_else(|| busy("no memory is left for this upload"))?;
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = request.into_body().into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(s.timeout, stream.next()).await {
            Err(_) => return Err(ApiError(StatusCode::REQUEST_TIMEOUT, "the body stopped coming".into(), None)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError(StatusCode::BAD_REQUEST, format!("the body: {e}"), None)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        let need = (bytes.len() + chunk.len()) as u64;
        if need > held.bytes() && !held.grow(need - held.bytes()) {
            return Err(busy("no memory is left for this upload"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, held))
}

/// Bytes decoding an image of `pixels` takes (the decoder's buffer and the float planes).
fn decoded_bytes(pixels: u64) -> u64 {
    pixels.saturating_mul(image_io::BYTES_PER_PIXEL)
}

async fn upload(State(s): State<Arc<Studio>>, request: Request) -> Result<impl IntoResponse, ApiError> {
    let (bytes, mut held) = read_body(&s, request, MAX_UPLOAD_BYTES).await?;
    let limits = DecodeLimits { max_pixels: MAX_UPLOAD_PIXELS, ..DecodeLimits::default() };
    // The decoding's memory too, from the header, before it is asked for.
    // (An image larger than an upload may be is refused by the decoder before it allocates.)
    let pixels = image_io::header_size(&bytes).map(|z| z.pixels() as u64).unwrap_or(0);
    if pixels <= MAX_UPLOAD_PIXELS && !held.grow(decoded_bytes(pixels)) {
        return Err(busy("no memory is left to decode this upload"));
    }
    let (image, bytes) =
        tokio::task::spawn_blocking(move || (image_io::decode(&bytes, &limits).map(|i| (i.width, i.height)), bytes))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    let (width, height) = image.map_err(|m| ApiError(StatusCode::BAD_REQUEST, format!("the upload: {m}"), None))?;
    let id = s.store.add_upload(&bytes)?;
    drop(held);
    Ok(axum::Json(serde_json::json!({ "id": id, "width": width, "height": height })))
}

async fn uploaded(State(s): State<Arc<Studio>>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let path = s.store.upload(&id).ok_or_else(|| not_found("upload"))?;
    let bytes = std::fs::read(&path).map_err(|_| not_found("upload"))?;
    let kind = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Gif) => "image/gif",
        Ok(image::ImageFormat::Bmp) => "image/bmp",
        Ok(image::ImageFormat::Tiff) => "image/tiff",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(kind))], bytes).into_response())
}

/// A job as the page submits it: uploads by id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    content: String,
    /// Each style with its uploads by id.
    styles: Vec<Style<String>>,
    #[serde(default)]
    config: StyleConfig,
    /// The fast network for `config.init` `"fast"`.
    #[serde(default)]
    fast: Option<crate::fast::FastStyle>,
}

/// A request body as `T`: a 400 naming the field at fault, or saying what follows the value.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = e.path().to_string();
        ApiError(StatusCode::BAD_REQUEST, format!("{field}: {}", e.inner()), Some(field))
    })?;
    de.end().map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("more after the {what}: {e}"), None))?;
    Ok(value)
}

async fn submit(State(s): State<Arc<Studio>>, request: Request) -> Result<impl IntoResponse, ApiError> {
    let (body, held) = read_body(&s, request, MAX_JOB_BYTES).await?;
    let request: JobRequest = parse_body(&body, "job")?;
    drop(held);
    if request.styles.len() > MAX_JOB_STYLES {
        let field = "styles".to_string();
        let text = format!("styles has {} style images, at most {MAX_JOB_STYLES} a job", request.styles.len());
        return Err(ApiError(StatusCode::BAD_REQUEST, text, Some(field)));
    }
    if s.jobs.queued() >= MAX_QUEUED {
        return Err(busy(&format!("{MAX_QUEUED} jobs are waiting already")));
    }
    let upload = |field: String, id: &str| {
        s.store
            .upload(id)
            .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("{field}: no such upload"), Some(field)))
    };
    let styles = (request.styles.iter().enumerate())
        .map(|(k, st)| st.try_map(|field, id| upload(format!("styles[{k}].{field}"), id)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(fast) = &request.fast {
        if request.config.init != crate::transfer::Init::Fast {
            let text = "fast applies with config.init \"fast\" (a job always optimises)".to_string();
            return Err(ApiError(StatusCode::BAD_REQUEST, text, Some("fast".into())));
        }
        fast.check()?;
    }
    let settings = Settings {
        network: s.network.clone(),
        config: request.config,
        fast: request.fast,
        ..Settings::new(upload("content".into(), &request.content)?, styles)
    };
    let stylizer = Stylizer::new(settings.config.clone())?;
    let evaluations: usize = stylizer.config().schedule()?.iter().map(|s| s.1).sum();
    if evaluations > MAX_JOB_ITERATIONS {
        let text = format!("config.iterations make {evaluations} evaluations, at most {MAX_JOB_ITERATIONS} a job");
        return Err(ApiError(StatusCode::BAD_REQUEST, text, Some("config.iterations".into())));
    }
    // The job's decoded images stay in memory while it waits: from the budget, before decoding.
    let (mut pixels, mut largest) = (0u64, 0u64);
    for path in [Some(&settings.content), settings.start.as_ref()].into_iter().flatten().chain(
        settings
            .styles
            .iter()
            .flat_map(|st| [Some(&st.image), st.region_mask.as_ref(), st.source_mask.as_ref()])
            .flatten(),
    ) {
        let bytes = std::fs::read(path).map_err(|_| not_found("upload"))?;
        let n = image_io::header_size(&bytes).map_or(0, |z| z.pixels() as u64);
        (pixels, largest) = (pixels.saturating_add(n), largest.max(n));
    }
    // The planes (12 bytes a pixel) while the job waits, and one image's decoding on the way.
    let need = pixels.saturating_mul(12).saturating_add(decoded_bytes(largest));
    let held = s.budget.reserve(need).ok_or_else(|| busy("no memory is left for this job's images"))?;
    let (files, net, planner) = (settings.clone(), s.net.clone(), stylizer.clone());
    let (inputs, plan) = tokio::task::spawn_blocking(move || -> crate::Result<_> {
        let inputs = files.load_inputs()?;
        let plan = planner.plan(&*net, &inputs)?;
        Ok((inputs, plan))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))??;
    let job = s.jobs.submit(Settings { plan: Some(plan), ..settings }, stylizer, inputs, held);
    let status = job.status.borrow().clone();
    Ok((StatusCode::CREATED, axum::Json(status)))
}

/// An instant preview: the fast network's picture of an upload after another.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastRequest {
    content: String,
    style: String,
    #[serde(default = "full_strength")]
    strength: f32,
    #[serde(default)]
    colour: crate::colour::Colour,
    #[serde(default = "preview_side")]
    size: usize,
}

fn full_strength() -> f32 {
    1.0
}

fn preview_side() -> usize {
    384
}

async fn fast_preview(State(s): State<Arc<Studio>>, request: Request) -> Result<Response, ApiError> {
    let (body, held) = read_body(&s, request, MAX_JOB_BYTES).await?;
    let request: FastRequest = parse_body(&body, "request")?;
    drop(held);
    if !(crate::fast::MIN_SIDE..=MAX_PREVIEW_SIDE).contains(&request.size) {
        let text =
            format!("size must be between {} and {MAX_PREVIEW_SIDE}, got {}", crate::fast::MIN_SIDE, request.size);
        return Err(ApiError(StatusCode::BAD_REQUEST, text, Some("size".into())));
    }
    let style = crate::fast::FastStyle::Painting { strength: request.strength };
    style.check().map_err(|_| {
        let text = format!("strength must be between 0 and 1, got {}", request.strength);
        ApiError(StatusCode::BAD_REQUEST, text, Some("strength".into()))
    })?;
    let upload = |field: &str, id: &str| {
        s.store
            .upload(id)
            .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("{field}: no such upload"), Some(field.into())))
    };
    let (content, painting) = (upload("content", &request.content)?, upload("style", &request.style)?);
    // Two images decoded and the network's tensors at the preview size, from the budget.
    let mut need = (request.size as u64).pow(2) * 32 * 4 * 8;
    for path in [&content, &painting] {
        let bytes = std::fs::read(path).map_err(|_| not_found("upload"))?;
        let pixels = image_io::header_size(&bytes).map_or(0, |z| z.pixels() as u64);
        need = need.saturating_add(pixels.saturating_mul(12)).saturating_add(decoded_bytes(pixels));
    }
    let held = s.budget.reserve(need).ok_or_else(|| busy("no memory is left for a preview"))?;
    let studio = s.clone();
    let jpeg = tokio::task::spawn_blocking(move || -> crate::Result<Vec<u8>> {
        let _held = held;
        let mut nets = studio.fast.lock().unwrap_or_else(|e| e.into_inner());
        if nets.is_none() {
            let dir = crate::weights::fetch::ensure_fast_networks(&mut |_| {})?;
            *nets = Some(Arc::new(crate::fast::FastNetworks::from_dir(&dir)?));
        }
        let photo = image_io::resize_to_fit(&image_io::load(&content)?, request.size);
        let painting = image_io::load(&painting)?;
        let picture = nets.as_ref().unwrap().paint(&photo, Some(&painting), &style, request.colour)?;
        image_io::encode(&picture, image_io::OutputFormat::Jpeg)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))??;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))], jpeg).into_response())
}

async fn active(State(s): State<Arc<Studio>>) -> impl IntoResponse {
    axum::Json(s.jobs.active())
}

async fn status(State(s): State<Arc<Studio>>, UrlPath(id): UrlPath<String>) -> Result<impl IntoResponse, ApiError> {
    let job = s.jobs.get(&id).ok_or_else(|| not_found("job"))?;
    let status = job.status.borrow().clone();
    Ok(axum::Json(status))
}

/// Decrements a job's watcher count when its event stream is dropped.
struct Watching(Arc<jobs::Job>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(State(s): State<Arc<Studio>>, UrlPath(id): UrlPath<String>) -> Result<impl IntoResponse, ApiError> {
    let job = s.jobs.get(&id).ok_or_else(|| not_found("job"))?;
    job.watchers.fetch_add(1, Ordering::SeqCst);
    let mut rx = job.status.subscribe();
    rx.mark_changed();
    let state = (rx, Watching(job), false);
    let stream = futures_util::stream::unfold(state, |(mut rx, watching, ended)| async move {
        if ended || rx.changed().await.is_err() {
            return None;
        }
        let status = rx.borrow_and_update().clone();
        let done = status.state == "done" || status.state == "failed";
        let event = Event::default().json_data(&status).unwrap_or_default();
        Some((Ok::<_, std::convert::Infallible>(event), (rx, watching, done)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn preview(State(s): State<Arc<Studio>>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let job = s.jobs.get(&id).ok_or_else(|| not_found("job"))?;
    let jpeg = job.preview.lock().unwrap().clone().ok_or_else(|| not_found("preview yet"))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))], jpeg).into_response())
}

async fn cancel(State(s): State<Arc<Studio>>, UrlPath(id): UrlPath<String>) -> Result<impl IntoResponse, ApiError> {
    s.jobs.get(&id).ok_or_else(|| not_found("job"))?;
    if !s.jobs.cancel(&id) {
        return Err(ApiError(StatusCode::CONFLICT, "the job has already ended".into(), None));
    }
    Ok(StatusCode::ACCEPTED)
}

async fn gallery(State(s): State<Arc<Studio>>) -> impl IntoResponse {
    axum::Json(s.store.gallery())
}

async fn gallery_file(
    State(s): State<Arc<Studio>>,
    UrlPath((id, file)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    if file == "image.tif" {
        // The TIFF is made on request from the stored PNG, with the same settings.
        let dir = s.store.entry_dir(&id).ok_or_else(|| not_found("picture"))?;
        let tiff = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let image = image_io::load(&dir.join("image.png")).map_err(|e| e.to_string())?;
            let settings = std::fs::read_to_string(dir.join("settings.json")).ok();
            image_io::encode_with(&image, image_io::OutputFormat::Tiff, settings.as_deref(), Default::default())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e, None))?;
        return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/tiff"))], tiff).into_response());
    }
    let kind = match file.as_str() {
        "image.png" => "image/png",
        "thumbnail.jpg" => "image/jpeg",
        "settings.json" | "losses.json" => "application/json",
        _ => return Err(not_found("file")),
    };
    let dir = s.store.entry_dir(&id).ok_or_else(|| not_found("picture"))?;
    file_response(&dir.join(&file), kind)
}

async fn delete(State(s): State<Arc<Studio>>, UrlPath(id): UrlPath<String>) -> Result<impl IntoResponse, ApiError> {
    if s.store.delete(&id) { Ok(StatusCode::NO_CONTENT) } else { Err(not_found("picture")) }
}

fn file_response(path: &Path, kind: &'static str) -> Result<Response, ApiError> {
    let bytes = std::fs::read(path).map_err(|_| not_found("file"))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    Ok((headers, bytes).into_response())
}
