//! The Run page: a connection, the command (typed, or a script uploaded as a file), a
//! justification; submitted through the same use case as `POST /api/v1/exec`.
//!
//! The form is `multipart/form-data` so it can carry a file; a urlencoded post (no file) is taken
//! too. A typed command's CRLF line breaks are the browser's and become the LF that was typed; an
//! uploaded file is the command byte for byte (UTF-8 required), so its SHA-256 is the file's.

use axum::extract::multipart::MultipartError;
use axum::extract::{Form, FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages;
use super::session::{Browser, CsrfForm, check_csrf};
use crate::domain::Surface;
use crate::error::Error;
use crate::service::{Hoop, Submission};

pub async fn run_page(State(hoop): State<Hoop>, browser: Browser) -> Response {
    match browser.signed_in() {
        Ok(me) => pages::run(&me, &hoop.connection_names(), None).into_response(),
        Err(to_sign_in) => to_sign_in.into_response(),
    }
}

/// The Run page's fields, from either encoding.
#[derive(Deserialize, Default)]
struct RunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    justification: String,
    /// The uploaded script's bytes, when a file was chosen.
    #[serde(skip)]
    script: Option<Vec<u8>>,
}

impl CsrfForm for RunForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A command from the Run page: the same use case as `POST /api/v1/exec`; then its request page,
/// which says whether it waits for approval or was approved at once. A refusal keeps what was
/// typed.
pub async fn run(State(hoop): State<Hoop>, browser: Browser, request: Request) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    let form = match read_form(request, hoop.max_command_bytes()).await {
        Ok(form) => form,
        Err(e) => return pages::error(Some(&me), &e),
    };
    if let Err(refused) = check_csrf(&me, &form) {
        return pages::error(Some(&me), &refused);
    }
    let submitted = async {
        let connection = form
            .connection
            .parse()
            .map_err(|e| Error::InvalidInput(format!("connection: {e}")))?;
        let command = command_of(&form)?;
        let justification = Some(form.justification.trim().to_string()).filter(|j| !j.is_empty());
        let submission = Submission {
            connection,
            command,
            justification,
        };
        hoop.submit(&me.user, submission, Surface::Web).await
    };
    match submitted.await {
        Ok(request) => Redirect::to(&pages::request_path(&request.id)).into_response(),
        Err(e) => {
            let status = super::status_of(&e);
            let page = pages::run(&me, &hoop.connection_names(), Some((&form.command, &e)));
            (status, page).into_response()
        }
    }
}

/// The command: typed or uploaded, never both (which one was meant is not for the server to
/// guess).
fn command_of(form: &RunForm) -> Result<String, Error> {
    let typed = !form.command.trim().is_empty();
    match &form.script {
        Some(_) if typed => Err(Error::InvalidInput(
            "both a typed command and a file were given; send one or the other".into(),
        )),
        Some(bytes) => String::from_utf8(bytes.clone()).map_err(|e| {
            Error::InvalidInput(format!(
                "the uploaded file is not UTF-8 text (the first bad byte is at offset {})",
                e.utf8_error().valid_up_to()
            ))
        }),
        // Browsers send a textarea's line breaks as CRLF; the command is what was typed.
        None => Ok(form.command.replace("\r\n", "\n")),
    }
}

/// The form's fields, from a multipart body (the page's own form) or a urlencoded one.
async fn read_form(request: Request, max_command_bytes: usize) -> Result<RunForm, Error> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    if !multipart {
        let Form(form) = Form::<RunForm>::from_request(request, &())
            .await
            .map_err(|e| Error::InvalidInput(e.body_text()))?;
        return Ok(form);
    }
    let too_large = |e: MultipartError| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(format!(
            "the form is larger than this server accepts; a command is at most {max_command_bytes} bytes"
        )),
        _ => Error::InvalidInput(format!("the form could not be read: {}", e.body_text())),
    };
    let mut parts = Multipart::from_request(request, &())
        .await
        .map_err(|e| Error::InvalidInput(e.body_text()))?;
    let mut form = RunForm::default();
    while let Some(field) = parts.next_field().await.map_err(too_large)? {
        match field.name().unwrap_or_default() {
            "csrf" => form.csrf = field.text().await.map_err(too_large)?,
            "connection" => form.connection = field.text().await.map_err(too_large)?,
            "command" => form.command = field.text().await.map_err(too_large)?,
            "justification" => form.justification = field.text().await.map_err(too_large)?,
            "script" => {
                // With no file chosen, a browser still sends the field, nameless and empty.
                let chosen = field.file_name().is_some_and(|name| !name.is_empty());
                let bytes = field.bytes().await.map_err(too_large)?;
                if chosen || !bytes.is_empty() {
                    form.script = Some(bytes.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(form)
}
