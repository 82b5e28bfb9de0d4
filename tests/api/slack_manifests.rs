//! The Slack app manifests an admin pastes into api.slack.com are ones Slack accepts: both
//! validate against Slack's own manifest schema (v1, a copy in tests/data), the HTTP one points
//! at the server's /slack routes, the Socket Mode one at nothing, and both ask for exactly the
//! scopes the bot uses.

use jsonschema::Validator;
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../data/slack-manifest.schema.v1.json");
const VALID_EXAMPLE: &str = include_str!("../data/slack-manifest.valid-example.v1.json");
const HTTP_MANIFEST: &str = include_str!("../../bot-manifests/slack/manifest.yaml");
const SOCKET_MODE_MANIFEST: &str =
    include_str!("../../bot-manifests/slack/manifest.socket-mode.yaml");

/// The bot scopes, each for the Web API calls that need it.
const SCOPES: [&str; 7] = [
    "channels:read",    // conversations.info (hoop doctor)
    "chat:write",       // chat.postMessage, chat.update, chat.postEphemeral
    "commands",         // /hoop
    "groups:read",      // conversations.info on private channels
    "im:write",         // conversations.open
    "users:read",       // users.info
    "users:read.email", // users.info's profile.email, for link_by_email
];

fn validator() -> Validator {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    // Slack's schema declares draft-07; validate with that draft and no other.
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    jsonschema::draft7::meta::validate(&schema).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

fn manifest(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn errors(validator: &Validator, manifest: &Value) -> Vec<String> {
    validator
        .iter_errors(manifest)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

#[test]
fn slacks_own_example_manifest_validates() {
    let example: Value = serde_json::from_str(VALID_EXAMPLE).unwrap();
    assert_eq!(errors(&validator(), &example), Vec::<String>::new());
}

#[test]
fn both_manifests_validate_against_slacks_schema() {
    let validator = validator();
    for (name, yaml) in [
        ("manifest.yaml", HTTP_MANIFEST),
        ("manifest.socket-mode.yaml", SOCKET_MODE_MANIFEST),
    ] {
        assert_eq!(
            errors(&validator, &manifest(yaml)),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

type Breakage = fn(&mut Value);

#[test]
fn a_broken_manifest_is_rejected() {
    let validator = validator();
    // Each breakage, with where in the manifest Slack's schema must point at it.
    let breakages: [(&str, Breakage); 5] = [
        ("/oauth_config/scopes", |m| {
            m["oauth_config"]["scopes"]["bots"] = json!(["chat:write"]);
        }),
        ("/oauth_config/scopes/bot", |m| {
            m["oauth_config"]["scopes"]["bot"] = json!("chat:write commands");
        }),
        ("/features/bot_user/always_online", |m| {
            m["features"]["bot_user"]["always_online"] = json!("true");
        }),
        ("/features/slash_commands/0/command", |m| {
            m["features"]["slash_commands"][0]["command"] = json!("hoop");
        }),
        ("/settings/interactivity/request_url", |m| {
            m["settings"]["interactivity"]["request_url"] = json!("hoop.example.com/slack");
        }),
    ];
    for (path, break_it) in breakages {
        let mut broken = manifest(HTTP_MANIFEST);
        break_it(&mut broken);
        let errors = errors(&validator, &broken);
        assert!(
            errors
                .iter()
                .any(|error| error.starts_with(&format!("{path}: "))),
            "{path}: {errors:?}"
        );
    }
}

#[test]
fn the_http_manifest_points_slack_at_the_servers_slack_routes() {
    let http = manifest(HTTP_MANIFEST);
    let urls = [
        (
            &http["features"]["slash_commands"][0]["url"],
            "/slack/commands",
        ),
        (
            &http["settings"]["interactivity"]["request_url"],
            "/slack/interactions",
        ),
    ];
    for (url, route) in urls {
        assert_eq!(
            url.as_str(),
            Some(format!("https://hoop.example.com{route}").as_str())
        );
    }
    assert_eq!(http["settings"]["interactivity"]["is_enabled"], true);
    assert_eq!(http["settings"]["socket_mode_enabled"], false);
    // hoopbot subscribes to no events; Slack would verify an events URL on saving the manifest,
    // before the server knows the signing secret, and refuse the manifest.
    assert_eq!(http["settings"].get("event_subscriptions"), None);
    assert_eq!(all_urls(&http).len(), urls.len());
}

#[test]
fn the_socket_mode_manifest_needs_no_public_url() {
    let socket = manifest(SOCKET_MODE_MANIFEST);
    assert_eq!(socket["settings"]["socket_mode_enabled"], true);
    assert_eq!(
        socket["settings"]["interactivity"],
        json!({ "is_enabled": true })
    );
    assert_eq!(all_urls(&socket), Vec::<&str>::new());
}

#[test]
fn both_manifests_ask_for_exactly_the_scopes_the_bot_uses() {
    for yaml in [HTTP_MANIFEST, SOCKET_MODE_MANIFEST] {
        let scopes = &manifest(yaml)["oauth_config"]["scopes"];
        assert_eq!(scopes, &json!({ "bot": SCOPES }));
    }
}

/// Apart from how Slack reaches the server, the two manifests describe the same app.
#[test]
fn both_manifests_describe_the_same_app() {
    let mut http = manifest(HTTP_MANIFEST);
    let mut socket = manifest(SOCKET_MODE_MANIFEST);
    for manifest in [&mut http, &mut socket] {
        let settings = manifest["settings"].as_object_mut().unwrap();
        settings.remove("interactivity");
        settings.remove("socket_mode_enabled");
        let command = manifest["features"]["slash_commands"][0]
            .as_object_mut()
            .unwrap();
        command.remove("url");
    }
    assert_eq!(http, socket);
    assert_eq!(http["display_information"]["name"], "hoopbot");
    assert_eq!(http["features"]["bot_user"]["always_online"], true);
    assert_eq!(http["settings"]["org_deploy_enabled"], false);
    assert_eq!(http["settings"]["token_rotation_enabled"], false);
}

/// Every string in the manifest that looks like a URL.
fn all_urls(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) if s.contains("://") => vec![s.as_str()],
        Value::Array(items) => items.iter().flat_map(all_urls).collect(),
        Value::Object(fields) => fields.values().flat_map(all_urls).collect(),
        _ => vec![],
    }
}
