//! The OpenAPI description matches the server: every documented operation exists, and a real
//! access request carries every field the schema requires.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(the_openapi_description_matches_the_server);

async fn the_openapi_description_matches_the_server(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let served: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert_eq!(served, file);

    let mut operations = 0;
    for (path, methods) in file["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            let url = app.url(&format!(
                "/api/v1{}",
                path.replace("{id}", "some-id")
                    .replace("{name}", "some-name")
            ));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = app.send(app.client.request(method.clone(), url)).await;
            let operation = &methods[method.as_str().to_lowercase()];
            if operation["security"] == serde_json::json!([]) {
                // Needs no token (its body is the credential): there, and refusing an empty call.
                assert_eq!(
                    (reply.status, reply.code()),
                    (StatusCode::BAD_REQUEST, "invalid_input"),
                    "{method} {path}"
                );
            } else {
                // Without a token every real operation answers 401; a missing one would be 404.
                assert_eq!(
                    (reply.status, reply.code()),
                    (StatusCode::UNAUTHORIZED, "unauthenticated"),
                    "{method} {path}"
                );
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 19);

    let id = app.held("SELECT 1").await;
    let request = app.request(&id).await;
    let schema = &file["components"]["schemas"]["AccessRequest"];
    for field in schema["required"].as_array().unwrap() {
        assert!(
            request.get(field.as_str().unwrap()).is_some(),
            "missing {field}"
        );
    }
    let documented: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    for field in request.as_object().unwrap().keys() {
        assert!(documented.contains(&field), "undocumented field {field}");
    }
}
