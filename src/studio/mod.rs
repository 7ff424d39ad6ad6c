//! impasto studio: a local web app over the library (`impasto serve`). An axum server on tokio
//! serves the page (from the binary: no network needed) and a JSON API; the runs happen on one
//! worker thread ([`jobs`]) on the one loaded network, and their progress reaches the page as
//! server-sent events. Uploads and finished pictures live in the work directory ([`store`]).
//!
//! Security: the server listens on loopback unless told otherwise; every `/api` request carries
//! the random token printed with the URL (`?token=` or the `x-impasto-token` header); every
//! request's `Host` header must be `localhost` or an IP address with this server's port (a
//! DNS-rebinding page comes under its own domain name); uploads are limited in
//! bytes ([`MAX_UPLOAD_BYTES`]) and decoded under the image limits before anything is stored;
//! clients name stored files only by generated ids.
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

pub mod jobs;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
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

const PAGE: &str = include_str!("page.html");

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
}

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
        }))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The page's address, with the token.
    pub fn url(&self, addr: SocketAddr) -> String {
        format!("http://{addr}/?token={}", self.token)
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/uploads", post(upload))
            .route("/examples", get(|State(s): State<Arc<Studio>>| async move { axum::Json(s.examples.clone()) }))
            .route("/uploads/{id}", get(uploaded))
            .route("/jobs", post(submit).get(active))
            .route("/jobs/{id}", get(status))
            .route("/jobs/{id}/events", get(events))
            .route("/jobs/{id}/preview.jpg", get(preview))
            .route("/jobs/{id}/cancel", post(cancel))
            .route("/gallery", get(gallery))
            .route("/gallery/{id}", axum::routing::delete(delete))
            .route("/gallery/{id}/{file}", get(gallery_file))
            .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_token));
        Router::new()
            .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
            .nest("/api", api)
            .layer(middleware::from_fn_with_state(self.clone(), require_host))
            .with_state(self.clone())
    }
}

/// Serves `studio` on `listener` until the process ends.
pub async fn serve(studio: Arc<Studio>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, studio.router()).await
}

/// An API error: a status and `{"error", "field"}`.
struct ApiError(StatusCode, String, Option<String>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1, "field": self.2 }))).into_response()
    }
}

impl From<crate::Error> for ApiError {
    /// A library error: a setting's field becomes its path in the job request (`config.size`,
    /// `styles[0].region_mask`).
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Setting { field, message } => {
                let field = if field.starts_with("styles") { field } else { format!("config.{field}") };
                ApiError(StatusCode::BAD_REQUEST, format!("{field} {message}"), Some(field))
            }
            e => ApiError(StatusCode::BAD_REQUEST, e.to_string(), None),
        }
    }
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
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !names_this_server(host, s.port) {
        return ApiError(StatusCode::FORBIDDEN, format!("the Host header '{host}' is not this server"), None)
            .into_response();
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

async fn upload(State(s): State<Arc<Studio>>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let limits = DecodeLimits { max_pixels: MAX_UPLOAD_PIXELS, ..DecodeLimits::default() };
    let bytes = body.to_vec();
    let (image, bytes) = tokio::task::spawn_blocking(move || (image_io::decode(&bytes, &limits), bytes))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    let image = image.map_err(|m| ApiError(StatusCode::BAD_REQUEST, format!("the upload: {m}"), None))?;
    let id = s.store.add_upload(&bytes)?;
    Ok(axum::Json(serde_json::json!({ "id": id, "width": image.width, "height": image.height })))
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
}

async fn submit(State(s): State<Arc<Studio>>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let request: JobRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ApiError(StatusCode::BAD_REQUEST, format!("{field}: {}", e.inner()), Some(field))
    })?;
    let upload = |field: String, id: &str| {
        s.store
            .upload(id)
            .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("{field}: no such upload"), Some(field)))
    };
    let styles = (request.styles.iter().enumerate())
        .map(|(k, st)| st.try_map(|field, id| upload(format!("styles[{k}].{field}"), id)))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = Settings {
        network: s.network.clone(),
        config: request.config,
        ..Settings::new(upload("content".into(), &request.content)?, styles)
    };
    let stylizer = Stylizer::new(settings.config.clone())?;
    let (files, net, planner) = (settings.clone(), s.net.clone(), stylizer.clone());
    let (inputs, plan) = tokio::task::spawn_blocking(move || -> crate::Result<_> {
        let inputs = files.load_inputs()?;
        let plan = planner.plan(&*net, &inputs)?;
        Ok((inputs, plan))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))??;
    let job = s.jobs.submit(Settings { plan: Some(plan), ..settings }, stylizer, inputs);
    let status = job.status.borrow().clone();
    Ok((StatusCode::CREATED, axum::Json(status)))
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
            image_io::encode_with_settings(&image, image_io::OutputFormat::Tiff, settings.as_deref())
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
