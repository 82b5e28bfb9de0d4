//! The request card: how an access request looks in Slack (Block Kit), and the requester's outcome
//! message. Pure functions; the Slack adapter posts and updates what they return.
//!
//! What an approver sees must be what runs, and nothing a user wrote may speak for the card:
//!
//! - the command is shown as [`display::command`] shows it, and only inside
//!   `rich_text_preformatted` elements, whose text Slack does not read as mrkdwn: ```` ``` ````,
//!   `<!channel>`, `<@U123>`, `*bold*` or `&lt;` in a command arrive as those very characters;
//! - every other text a user (or an agent) wrote — justification, names, reasons, errors, result
//!   tags — is one line ([`display::single_line`]), escaped ([`escape`]) and placed only in
//!   `plain_text` objects, where `*`, `_`, `~` and backticks mean nothing and no mention or link
//!   can form. mrkdwn carries only hoopbot's own labels, with `verbatim` set so Slack links nothing;
//!   the request's url goes out as a rich text `link` element, exactly as given;
//! - whatever does not fit Slack's limits is cut visibly: a field ends in "…", and a command too
//!   long for one message ends with a note saying how much is not shown, the start of its
//!   SHA-256 and where to read all of it. Never a silent cut.
//!
//! Slack's limits, from its Block Kit reference (docs.slack.dev):
//!
//! - 50 blocks per message ("You can include up to 50 blocks in each message",
//!   /reference/block-kit/blocks);
//! - a section's text 3,000 characters, its fields at most 10 of 2,000 characters each
//!   (/reference/block-kit/blocks/section-block); a header's text 150 characters
//!   (/reference/block-kit/blocks/header-block);
//! - an actions block at most 25 elements (/reference/block-kit/blocks/actions-block);
//! - a button's text 75 characters, its value 2,000, its action_id 255
//!   (/reference/block-kit/block-elements/button-element);
//! - rich text: no length limit is documented for a `rich_text` block, a
//!   `rich_text_preformatted` element or its text (/reference/block-kit/blocks/rich-text-block,
//!   /reference/block-kit/block-elements/rich-text-preformatted-element);
//! - a message's `text` is truncated past 40,000 characters
//!   (api.slack.com/changelog/2018-04-truncating-really-long-messages); no total is documented
//!   for blocks, and one report (github.com/slackapi/bolt-js/issues/2509) shows
//!   `msg_blocks_too_long` well below 40,000 for `markdown` blocks, which have their own
//!   cumulative 12,000. This card uses no `markdown` block.
//!
//! Every length here is counted in UTF-8 bytes, never fewer than Slack's count whether it counts
//! characters or UTF-16 units, so a cap kept in bytes is kept in Slack's unit too.

use serde::Serialize;
use slack_morphism::prelude::*;

use super::contract::{self, ButtonValue};
use crate::display::{self, single_line};
use crate::domain::{AccessRequest, GroupStatus, Status};
use crate::sentences::{self, Words};

/// Which decision buttons a copy of the card carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buttons<'a> {
    /// The channel copy: "Approve as <group>" for every pending group, and "Reject".
    Pending,
    /// A DM copy: approve buttons only for these groups (those the one rule, `domain::you_may`,
    /// lets the recipient approve now), and "Reject".
    Groups(&'a [String]),
}

/// A message ready for `chat.postMessage` / `chat.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The notification fallback: a short escaped line, never the command (notifications and
    /// some clients read it as mrkdwn).
    pub text: String,
    pub blocks: Vec<SlackBlock>,
}

/// The card for `request` as it is now; `url` is the request's page/API url.
///
/// From the top: the outcome in words (a header, then a sentence naming who and why), the
/// request's facts, the link, each approval group's state, the command's warnings, the command
/// itself, and, while the request is pending, the decision buttons.
pub fn request_card(request: &AccessRequest, url: &str, buttons: Buttons<'_>) -> Message {
    let text = WORDS.notification(request);
    let shown = display::command(&request.command);
    let mut head = vec![
        headline(request.status),
        plain_section(WORDS.status_sentence(request)),
    ];
    head.extend(WORDS.without_review(request).map(plain_section));
    head.extend([facts(request), link_line("Request page: ", url)]);
    head.extend(approvals(request));
    head.extend(
        WORDS
            .command_warnings(&request.command, WARNING_MAX)
            .into_iter()
            .map(plain_section),
    );
    head.push(command_label(request));
    let tail = if request.status == Status::Pending {
        decision_buttons(request, buttons)
    } else {
        Vec::new()
    };

    // The command gets every block and byte the rest of the card leaves, less room for the note.
    let worst_note = cut_note(request, url, shown.text.chars().count());
    let blocks_left = MAX_BLOCKS.saturating_sub(BLOCK_HEADROOM + head.len() + tail.len() + 1);
    let bytes_left = MESSAGE_MAX
        .saturating_sub(json_len(&head) + json_len(&tail) + json_len(&worst_note) + 1 + text.len());
    let split = split_command(&request.command, blocks_left, bytes_left);
    debug_assert_eq!(split.parts.concat() + &split.rest, shown.text);

    let mut blocks = head;
    if shown.text.is_empty() {
        blocks.push(plain_section("(The command is empty.)".to_string()));
    }
    blocks.extend(split.parts.iter().map(|part| command_part(part)));
    if !split.rest.is_empty() {
        blocks.push(cut_note(request, url, split.rest.chars().count()));
    }
    blocks.extend(tail);
    Message { text, blocks }
}

/// The requester's outcome DM: "Your command on <connection> was approved/rejected by X: reason /
/// expired / cancelled / executed / failed: <one-line summary>", with the link to the request.
pub fn outcome_message(request: &AccessRequest, url: &str) -> Message {
    let sentence = WORDS.outcome_sentence(request);
    let text = WORDS
        .with_reason_max(TEXT_PART_MAX)
        .outcome_sentence(request);
    Message {
        text,
        blocks: vec![
            plain_section(sentence),
            link_line(&format!("Request {}: ", single_line(&request.id)), url),
        ],
    }
}

/// Escapes `&`, `<` and `>` as `&amp;`, `&lt;` and `&gt;`: Slack reads those three as control
/// characters in mrkdwn and plain text fields ("Escaping text", docs.slack.dev/messaging/
/// formatting-message-text), so escaped text can form no mention, link or entity of its own.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Blocks in one message (Slack's limit).
const MAX_BLOCKS: usize = 50;
/// Blocks left unused below [`MAX_BLOCKS`], so a later change to the card cannot tip it over.
const BLOCK_HEADROOM: usize = 5;
/// The whole message, serialized blocks plus `text`, in bytes. Slack documents 40,000 characters
/// for a message's text and no total for blocks; the card keeps within the same figure counted in
/// bytes of JSON, which bounds Slack's count whatever its unit, and leaves a 50,000-character
/// command about 35,000 shown. A rejected card would reach no approver, so staying well inside
/// what is documented matters more than showing the last few thousand characters, which the note
/// points to.
const MESSAGE_MAX: usize = 40_000;
/// One `rich_text_preformatted` element of the command, in bytes. Slack documents no limit for
/// rich text; this is the 3,000 of a section's text, the figure for text everywhere else in Block
/// Kit, so each part stays at a size Slack is known to take.
const COMMAND_PART_MAX: usize = 3_000;
/// A section's text (Slack: 3,000 characters).
const SECTION_TEXT_MAX: usize = 3_000;
/// A header's text (Slack: 150 characters).
const HEADER_MAX: usize = 150;
/// A button's text (Slack: 75 characters).
const BUTTON_TEXT_MAX: usize = 75;
/// A button's value (Slack: 2,000 characters).
const BUTTON_VALUE_MAX: usize = 2_000;
/// Elements in one actions block (Slack: 25).
const ACTIONS_MAX: usize = 25;
/// Approve buttons on one card: two actions blocks, the second ending with "Reject".
const APPROVE_BUTTONS_MAX: usize = 2 * ACTIONS_MAX - 1;

/// A name (requester, connection, group, approver, agent) or the request id, shown.
const NAME_MAX: usize = 200;
/// How a decision came in (api, slack, ...).
const VIA_MAX: usize = 40;
/// The justification; a section field holds 2,000.
const JUSTIFICATION_MAX: usize = 1_000;
/// A rejection's reason or a failure's error in a sentence.
const REASON_MAX: usize = 1_000;
/// A one-line result summary (tags, row counts, exit code).
const SUMMARY_MAX: usize = 300;
/// One warning sentence about the command.
const WARNING_MAX: usize = 1_000;
/// The group names a status sentence lists before it counts the rest.
const GROUP_LIST_MAX: usize = 1_000;
/// Each user-written part of the notification text, which should stay a short line.
const TEXT_PART_MAX: usize = 200;

/// The shared sentences as a card writes them: user text escaped for Slack, cut to its limits.
pub(super) const WORDS: Words = Words {
    escape,
    name_max: NAME_MAX,
    via_max: VIA_MAX,
    reason_max: REASON_MAX,
    summary_max: SUMMARY_MAX,
    group_list_max: GROUP_LIST_MAX,
};

/// The outcome in words, large, with its symbol.
fn headline(status: Status) -> SlackBlock {
    let words = format!(
        "{} {}",
        sentences::symbol(status),
        sentences::headline(status)
    );
    debug_assert!(words.len() <= HEADER_MAX);
    SlackHeaderBlock::new(SlackBlockPlainText::new(words).with_emoji(true).into()).into()
}

/// The request's facts as label/value pairs, which Slack lays out as two columns: labels are
/// hoopbot's (mrkdwn), values are user text (plain text).
fn facts(request: &AccessRequest) -> SlackBlock {
    let (when_label, when) = match (request.status, request.decided_at) {
        (Status::Pending, _) | (_, None) => ("*Expires*", request.expires_at),
        (_, Some(at)) => ("*Decided*", at),
    };
    let justification = match request.justification.as_deref() {
        Some(j) if !j.is_empty() => line(j, JUSTIFICATION_MAX),
        _ => "(none given)".to_string(),
    };
    let pairs = [
        ("*Request*", line(&request.id, NAME_MAX)),
        ("*Requester*", line(&request.requester, NAME_MAX)),
        ("*Connection*", line(&request.connection, NAME_MAX)),
        (when_label, sentences::utc(when)),
        ("*Justification*", justification),
    ];
    let fields = pairs
        .into_iter()
        .flat_map(|(name, value)| [label(name).into(), plain(value)])
        .collect();
    SlackSectionBlock::new().with_fields(fields).into()
}

/// Each approval group and its state, one per line: "✓ dba — approved by bob@x (slack)". Lines
/// go into one section up to its limit; groups past it are counted.
fn approvals(request: &AccessRequest) -> Option<SlackBlock> {
    if request.approval_groups.is_empty() {
        return None;
    }
    let mut text = String::from("Approvals");
    let total = request.approval_groups.len();
    for (listed, g) in request.approval_groups.iter().enumerate() {
        let state = format!(
            "{} {} — {}",
            sentences::group_mark(g, request.status),
            line(&g.group, NAME_MAX),
            WORDS.group_state(g, request.status)
        );
        // Room for this line and, should later ones not fit, the count of the rest.
        if text.len() + 1 + state.len() + 60 > SECTION_TEXT_MAX {
            text.push_str(&format!(
                "\n… and {} more groups: see the request page",
                total - listed
            ));
            break;
        }
        text.push('\n');
        text.push_str(&state);
    }
    Some(plain_section(text))
}

/// What precedes the command: its size and the start of its SHA-256, which the agent checks.
fn command_label(request: &AccessRequest) -> SlackBlock {
    let text = format!(
        "*Command* ({} bytes, SHA-256 {}…), exactly as it will run; hidden characters are shown as \\u{{…}}:",
        request.command.len(),
        WORDS.sha_start(request)
    );
    SlackContextBlock::new(vec![label(&text).into()]).into()
}

/// The command as shown, cut into parts that each fit one `rich_text_preformatted` element.
struct Split {
    /// The parts, in order; their concatenation is a prefix of the shown command.
    parts: Vec<String>,
    /// What did not fit.
    rest: String,
}

/// Cuts the shown command into at most `max_parts` parts of at most [`COMMAND_PART_MAX`] bytes,
/// all of them serialized within `max_json` bytes. A cut falls between the shown forms of two
/// characters of the command, so never inside a `\u{…}` escape, and where it can after a line
/// break in the second half of a part, so most parts hold whole lines.
fn split_command(command: &str, max_parts: usize, max_json: usize) -> Split {
    // One shown piece per character of the command: `display::visible` escapes character by
    // character, so the pieces join into exactly what `display::command` shows.
    let mut buf = [0u8; 4];
    let pieces: Vec<String> = command
        .chars()
        .map(|c| display::visible(c.encode_utf8(&mut buf)))
        .collect();
    let json_of = |piece: &str| json_len(&piece) - 2;
    let overhead = json_len(&command_part("")) + 1;
    let mut parts = Vec::new();
    let (mut start, mut used) = (0, 0);
    while start < pieces.len() && parts.len() < max_parts {
        let (mut end, mut bytes, mut json) = (start, 0, overhead);
        // Where the part would end after its last line break in the second half: (end, json).
        let mut after_break = None;
        while end < pieces.len() {
            let piece = &pieces[end];
            let piece_json = json_of(piece);
            if bytes + piece.len() > COMMAND_PART_MAX || used + json + piece_json > max_json {
                break;
            }
            bytes += piece.len();
            json += piece_json;
            end += 1;
            if piece == "\n" && bytes >= COMMAND_PART_MAX / 2 {
                after_break = Some((end, json));
            }
        }
        if end == start {
            break;
        }
        if end < pieces.len()
            && let Some((at, at_json)) = after_break
        {
            (end, json) = (at, at_json);
        }
        parts.push(pieces[start..end].concat());
        used += json;
        start = end;
    }
    Split {
        parts,
        rest: pieces[start..].concat(),
    }
}

/// One part of the command: a `rich_text_preformatted` element holding a single text element,
/// sent as it is (rich text is not mrkdwn; nothing in it is escaped or parsed).
fn command_part(text: &str) -> SlackBlock {
    let part =
        SlackRichTextPreformatted::new(vec![SlackRichTextText::new(text.to_string()).into()]);
    SlackRichTextBlock::new(vec![part.into()]).into()
}

/// Said where the command stops being shown: how much is missing, the start of its SHA-256 and
/// where to read all of it.
fn cut_note(request: &AccessRequest, url: &str, not_shown: usize) -> SlackBlock {
    let text = WORDS.long_command_note(request, not_shown);
    rich_line(vec![SlackRichTextText::new(text).bold().into(), link(url)])
}

/// "Approve as <group>" for each group this copy offers that is still pending, then "Reject", in
/// actions blocks of at most 25. A group whose button cannot carry it is counted in a note.
fn decision_buttons(request: &AccessRequest, buttons: Buttons<'_>) -> Vec<SlackBlock> {
    let offered = |group: &str| match buttons {
        Buttons::Pending => true,
        Buttons::Groups(mine) => mine.iter().any(|m| m == group),
    };
    let mut elements: Vec<SlackActionBlockElement> = Vec::new();
    let mut left_out = 0;
    for (index, g) in request.approval_groups.iter().enumerate() {
        if g.status != GroupStatus::Pending || !offered(&g.group) {
            continue;
        }
        let value = button_value(&request.id, Some(&g.group));
        if value.len() > BUTTON_VALUE_MAX || elements.len() == APPROVE_BUTTONS_MAX {
            left_out += 1;
            continue;
        }
        let label = format!(
            "Approve as {}",
            line(&g.group, BUTTON_TEXT_MAX - "Approve as ".len())
        );
        elements.push(
            SlackBlockButtonElement::new(SlackBlockPlainText::new(label).with_emoji(false).into())
                .with_action_id(SlackActionId(contract::approve_action(index)))
                .with_value(value)
                .with_style(SlackBlockButtonStyle::Primary)
                .into(),
        );
    }
    elements.push(
        SlackBlockButtonElement::new(SlackBlockPlainText::new("Reject".to_string()).into())
            .with_action_id(SlackActionId(contract::REJECT_ACTION.to_string()))
            .with_value(button_value(&request.id, None))
            .with_style(SlackBlockButtonStyle::Danger)
            .into(),
    );
    let mut blocks: Vec<SlackBlock> = elements
        .chunks(ACTIONS_MAX)
        .map(|chunk| SlackActionsBlock::new(chunk.to_vec()).into())
        .collect();
    if left_out > 0 {
        blocks.push(plain_section(format!(
            "{left_out} more group(s) cannot be approved from this message (too many, or a name \
             too long for a Slack button): use `hoop requests approve {} --group GROUP`.",
            line(&request.id, NAME_MAX)
        )));
    }
    blocks
}

/// A decision button's value: which request and, to approve, which group (in full, however the
/// label was cut).
fn button_value(request_id: &str, group: Option<&str>) -> String {
    serde_json::to_string(&ButtonValue {
        request_id: request_id.to_string(),
        group: group.map(str::to_string),
    })
    .expect("a button value serializes")
}

/// User text for a plain text field: one line, escaped ([`escape`]), at most `max` bytes, ending
/// in "…" when cut (see [`Words::field`]).
fn line(text: &str, max: usize) -> String {
    WORDS.field(text, max)
}

/// A plain text object for user text: `emoji` off, so `:name:` stays as typed.
fn plain(text: String) -> SlackBlockText {
    let text = if text.is_empty() {
        "-".to_string()
    } else {
        text
    };
    SlackBlockPlainText::new(text).with_emoji(false).into()
}

/// A section holding one plain text, cut to the section limit (its parts are cut already).
fn plain_section(text: String) -> SlackBlock {
    debug_assert!(text.len() <= SECTION_TEXT_MAX);
    SlackSectionBlock::new().with_text(plain(text)).into()
}

/// mrkdwn for hoopbot's own labels only; `verbatim` so Slack links and mentions nothing.
fn label(text: &str) -> SlackBlockMarkDownText {
    SlackBlockMarkDownText::new(text.to_string()).with_verbatim(true)
}

/// A bold label and a link, as rich text: the url goes out exactly, with nothing to escape.
fn link_line(label: &str, url: &str) -> SlackBlock {
    rich_line(vec![
        SlackRichTextText::new(label.to_string()).bold().into(),
        link(url),
    ])
}

fn link(url: &str) -> SlackRichTextInlineElement {
    SlackRichTextLink::new(SlackRelaxedUrl(url.to_string())).into()
}

fn rich_line(elements: Vec<SlackRichTextInlineElement>) -> SlackBlock {
    SlackRichTextBlock::new(vec![SlackRichTextSection::new(elements).into()]).into()
}

/// Bytes of `value` as JSON.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |json| json.len())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::{
        ExecutionResult, GroupApproval, Millis, Rejection, StatementResult, command_sha256,
    };
    use crate::sentences::utc;

    const URL: &str = "https://hoop.example.com/access-requests/req-1";

    /// 2026-12-06 09:45 UTC.
    fn t0() -> Millis {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 6)
            .unwrap()
            .and_hms_opt(9, 45, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn group(name: &str, approved_by: Option<&str>) -> GroupApproval {
        GroupApproval {
            group: name.to_string(),
            status: if approved_by.is_some() {
                GroupStatus::Approved
            } else {
                GroupStatus::Pending
            },
            decided_by: approved_by.map(str::to_string),
            decided_at: approved_by.map(|_| t0() + 60_000),
            via: approved_by.map(|_| "slack".to_string()),
        }
    }

    /// A pending request: dba has approved, security and audit have not.
    fn request() -> AccessRequest {
        with_command("UPDATE accounts SET plan = 'pro' WHERE id = 42;")
    }

    fn with_command(command: &str) -> AccessRequest {
        AccessRequest {
            id: "req-1".into(),
            connection: "prod-db".into(),
            command: command.to_string(),
            command_sha256: command_sha256(command),
            requester: "alice@x.com".into(),
            justification: Some("TICKET-42: upgrade the customer".into()),
            status: Status::Pending,
            created_at: t0(),
            expires_at: t0() + 30 * 60_000,
            decided_at: None,
            version: 3,
            approval_groups: vec![
                group("dba", Some("bob@x.com")),
                group("security", None),
                group("audit", None),
            ],
            rejection: None,
            result: None,
            claimed_by: None,
            auto_approval: None,
            offer: None,
        }
    }

    fn decided(status: Status) -> AccessRequest {
        let mut r = request();
        r.status = status;
        r.decided_at = Some(t0() + 5 * 60_000);
        r
    }

    fn card(request: &AccessRequest) -> (Message, Value) {
        let message = request_card(request, URL, Buttons::Pending);
        check_limits(&message);
        let value = serde_json::to_value(&message.blocks).unwrap();
        (message, value)
    }

    /// Calls `f` on every JSON value inside `value`, `value` first.
    fn walk<'a>(value: &'a Value, f: &mut impl FnMut(&'a Value)) {
        f(value);
        match value {
            Value::Array(items) => items.iter().for_each(|v| walk(v, f)),
            Value::Object(map) => map.values().for_each(|v| walk(v, f)),
            _ => {}
        }
    }

    /// Every object of type `kind`, in order.
    fn of_type<'a>(value: &'a Value, kind: &str) -> Vec<&'a Value> {
        let mut found = Vec::new();
        walk(value, &mut |v| {
            if v["type"] == kind {
                found.push(v);
            }
        });
        found
    }

    /// The text of every text object of type `kind` (`plain_text`, `mrkdwn`, rich `text`).
    fn texts(value: &Value, kind: &str) -> Vec<String> {
        of_type(value, kind)
            .into_iter()
            .map(|v| v["text"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every string anywhere in the JSON: what any reader of the message could be shown.
    fn strings(value: &Value) -> Vec<String> {
        let mut found = Vec::new();
        walk(value, &mut |v| {
            if let Value::String(s) = v {
                found.push(s.clone());
            }
        });
        found
    }

    /// The text of each `rich_text_preformatted` element: the command's parts.
    fn command_parts(value: &Value) -> Vec<String> {
        of_type(value, "rich_text_preformatted")
            .into_iter()
            .map(|p| texts(p, "text").concat())
            .collect()
    }

    /// The index of the first top-level block whose JSON contains `needle`.
    fn block_with(value: &Value, needle: &str) -> usize {
        value
            .as_array()
            .unwrap()
            .iter()
            .position(|b| b.to_string().contains(needle))
            .unwrap_or_else(|| panic!("no block contains {needle:?}"))
    }

    /// Slack's limits and the escaping rule, checked on every message a test makes.
    fn check_limits(message: &Message) {
        let value = serde_json::to_value(&message.blocks).unwrap();
        assert!(
            message.blocks.len() <= MAX_BLOCKS,
            "{} blocks",
            message.blocks.len()
        );
        let size = serde_json::to_vec(&message.blocks).unwrap().len() + message.text.len();
        assert!(size <= MESSAGE_MAX, "{size} bytes");
        assert_escaped(&message.text);
        assert!(
            message.text.len() <= 4_000,
            "text of {} bytes",
            message.text.len()
        );
        walk(&value, &mut |v| match v["type"].as_str() {
            Some("plain_text" | "mrkdwn") => {
                let text = v["text"].as_str().unwrap();
                assert!(!text.is_empty());
                assert!(text.len() <= SECTION_TEXT_MAX, "{} bytes", text.len());
                assert_escaped(text);
            }
            Some("section") => {
                if let Some(fields) = v["fields"].as_array() {
                    assert!(fields.len() <= 10);
                    for field in fields {
                        assert!(field["text"].as_str().unwrap().len() <= 2_000);
                    }
                }
            }
            Some("header") => assert!(v["text"]["text"].as_str().unwrap().len() <= HEADER_MAX),
            Some("actions") => assert!(v["elements"].as_array().unwrap().len() <= ACTIONS_MAX),
            Some("context") => assert!(v["elements"].as_array().unwrap().len() <= 10),
            Some("button") => {
                assert!(v["text"]["text"].as_str().unwrap().len() <= BUTTON_TEXT_MAX);
                assert!(v["value"].as_str().unwrap().len() <= BUTTON_VALUE_MAX);
                assert!(v["action_id"].as_str().unwrap().len() <= 255);
            }
            Some("rich_text_preformatted") => {
                for text in texts(v, "text") {
                    assert!(!text.is_empty());
                    assert!(text.len() <= COMMAND_PART_MAX, "{} bytes", text.len());
                }
            }
            _ => {}
        });
    }

    /// No `<` or `>`, and every `&` starts one of the three entities: nothing can form a mention,
    /// a link or an entity the text did not mean.
    fn assert_escaped(text: &str) {
        assert!(!text.contains(['<', '>']), "unescaped: {text:?}");
        for (at, _) in text.match_indices('&') {
            let rest = &text[at..];
            assert!(
                ["&amp;", "&lt;", "&gt;"]
                    .iter()
                    .any(|e| rest.starts_with(e)),
                "bare & in {text:?}"
            );
        }
    }

    #[test]
    fn escape_replaces_exactly_slacks_three_control_characters() {
        assert_eq!(escape("a & b < c > d"), "a &amp; b &lt; c &gt; d");
        assert_eq!(escape("&lt;!channel&gt;"), "&amp;lt;!channel&amp;gt;");
        assert_eq!(escape("*_~`:x: \"'"), "*_~`:x: \"'");
        assert_eq!(escape("名前 ✓"), "名前 ✓");
    }

    #[test]
    fn times_are_shown_in_utc_to_the_minute() {
        assert_eq!(utc(t0()), "2026-12-06 09:45 UTC");
        assert_eq!(utc(t0() + 30 * 60_000 + 59_999), "2026-12-06 10:15 UTC");
    }

    #[test]
    fn the_pending_card_shows_everything_an_approver_needs() {
        let (message, value) = card(&request());
        let blocks = value.as_array().unwrap();
        assert_eq!(
            message.text,
            "alice@x.com wants to run a command on prod-db — approval needed"
        );
        assert_eq!(
            blocks[0],
            json!({"type": "header", "text": {"type": "plain_text",
                "text": "⏳ Waiting for approval", "emoji": true}})
        );
        assert_eq!(
            blocks[1]["text"],
            json!({"type": "plain_text", "text": "Waiting for approval from security, audit.",
                "emoji": false})
        );
        let label = |text: &str| json!({"type": "mrkdwn", "text": text, "verbatim": true});
        let value_of = |text: &str| json!({"type": "plain_text", "text": text, "emoji": false});
        assert_eq!(
            blocks[2],
            json!({"type": "section", "fields": [
                label("*Request*"), value_of("req-1"),
                label("*Requester*"), value_of("alice@x.com"),
                label("*Connection*"), value_of("prod-db"),
                label("*Expires*"), value_of("2026-12-06 10:15 UTC"),
                label("*Justification*"), value_of("TICKET-42: upgrade the customer"),
            ]})
        );
        assert_eq!(
            blocks[3],
            json!({"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "text", "text": "Request page: ", "style": {"bold": true}},
                {"type": "link", "url": URL},
            ]}]})
        );
        assert_eq!(
            blocks[4]["text"]["text"],
            "Approvals\n✓ dba — approved by bob@x.com (slack)\n○ security — waiting\n○ audit — waiting"
        );
        assert_eq!(blocks[4]["text"]["type"], "plain_text");
        let label = blocks[5]["elements"][0]["text"].as_str().unwrap();
        let sha = command_sha256(&request().command);
        let size = format!("*Command* ({} bytes, SHA-256 ", request().command.len());
        assert!(label.starts_with(&size), "{label}");
        assert!(label.contains(&sha[..12]), "{label}");
        assert_eq!(
            blocks[6],
            json!({"type": "rich_text", "elements": [{"type": "rich_text_preformatted",
                "elements": [{"type": "text",
                    "text": "UPDATE accounts SET plan = 'pro' WHERE id = 42;"}]}]})
        );
        assert_eq!(
            blocks[7],
            json!({"type": "actions", "elements": [
                {"type": "button", "action_id": "approve.1",
                    "text": {"type": "plain_text", "text": "Approve as security", "emoji": false},
                    "value": r#"{"request_id":"req-1","group":"security"}"#, "style": "primary"},
                {"type": "button", "action_id": "approve.2",
                    "text": {"type": "plain_text", "text": "Approve as audit", "emoji": false},
                    "value": r#"{"request_id":"req-1","group":"audit"}"#, "style": "primary"},
                {"type": "button", "action_id": "reject",
                    "text": {"type": "plain_text", "text": "Reject"},
                    "value": r#"{"request_id":"req-1"}"#, "style": "danger"},
            ]})
        );
        assert_eq!(blocks.len(), 8);
        // The values are what the interaction handler reads back.
        let values: Vec<ButtonValue> = of_type(&value, "button")
            .iter()
            .map(|b| serde_json::from_str(b["value"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(values[0].group.as_deref(), Some("security"));
        assert_eq!(values[2].group, None);
        assert!(values.iter().all(|v| v.request_id == "req-1"));
    }

    #[test]
    fn the_command_goes_out_verbatim_in_rich_text_only() {
        let command = "SELECT '```' AS fence, '<!channel>', '<!here>', '<@U123>', '*bold*' \
                       -- _it_ ~gone~ `code` <https://x|Approve> &lt; &amp; > :smile:\n```\nDROP TABLE t;";
        let (message, value) = card(&with_command(command));
        assert_eq!(command_parts(&value), [command]);
        // Serialized, the characters stay as they are: nothing escaped or entity-encoded.
        let json = serde_json::to_string(&message.blocks).unwrap();
        for raw in [
            "<!channel>",
            "<!here>",
            "<@U123>",
            "<https://x|Approve>",
            "&lt; &amp; >",
        ] {
            assert!(json.contains(raw), "{raw}");
        }
        assert!(!json.contains("&amp;lt;"));
        // Only the rich text carries it: no mrkdwn or plain text field, and not the notification.
        let fields = [texts(&value, "mrkdwn"), texts(&value, "plain_text")].concat();
        for field in &fields {
            assert!(
                !field.contains("channel") && !field.contains("DROP"),
                "{field}"
            );
        }
        assert!(!message.text.contains("SELECT"));
    }

    #[test]
    fn emoji_right_to_left_and_binary_looking_commands_show_as_the_display_rules_say() {
        // Emoji (with a skin tone) and right-to-left words are ordinary text: shown as typed.
        for command in [
            "UPDATE t SET note = '🚀 ✅ 👍🏽 done'",
            "UPDATE t SET name = 'שלום עולם' WHERE city = 'القاهرة'",
        ] {
            let (_, value) = card(&with_command(command));
            assert_eq!(command_parts(&value).concat(), command);
        }
        // Binary-looking text without NULs: the control characters become escapes, the rest stays,
        // and the card says what it escaped.
        let binary = "INSERT INTO blobs VALUES ('\u{1}\u{7f}\u{1b}[2J\u{fffd}ÿþ\u{8}')";
        let (message, value) = card(&with_command(binary));
        let shown = command_parts(&value).concat();
        assert_eq!(shown, crate::display::command(binary).text);
        assert!(
            shown.contains("\\u{1b}[2J") && shown.contains("ÿþ"),
            "{shown}"
        );
        assert!(!shown.contains('\u{1b}'));
        let json = serde_json::to_string(&message.blocks).unwrap();
        assert!(json.contains("invisible character"), "{json}");
    }

    #[test]
    fn user_text_is_one_escaped_plain_text_line_that_cannot_mention_link_or_format() {
        let mut r = request();
        r.justification = Some(
            "<!channel> *URGENT* `x` ~y~ _z_ <https://evil|Approve> &amp; :white_check_mark:\n\
             ✓ security — approved by boss@x.com (slack)"
                .into(),
        );
        r.requester = "<@U999>".into();
        r.approval_groups[1].group = "<!here> *sec*".into();
        let (message, value) = card(&r);
        let justification = "&lt;!channel&gt; *URGENT* `x` ~y~ _z_ &lt;https://evil|Approve&gt; \
                             &amp;amp; :white_check_mark:\\n✓ security — approved by boss@x.com (slack)";
        let fields = value[2]["fields"].as_array().unwrap();
        assert_eq!(
            fields[9],
            json!({"type": "plain_text", "text": justification, "emoji": false})
        );
        assert_eq!(fields[3]["text"], "&lt;@U999&gt;");
        assert_eq!(
            message.text,
            "&lt;@U999&gt; wants to run a command on prod-db — approval needed"
        );
        assert!(
            value[4]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("○ &lt;!here&gt; *sec* — waiting")
        );
        let buttons = of_type(&value, "button");
        assert_eq!(buttons[0]["text"]["text"], "Approve as &lt;!here&gt; *sec*");
        // The button's value carries the group as it is, for the handler to match.
        let group: ButtonValue =
            serde_json::from_str(buttons[0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(group.group.as_deref(), Some("<!here> *sec*"));
        // mrkdwn holds only hoopbot's own labels.
        for text in texts(&value, "mrkdwn") {
            assert!(!text.contains("URGENT") && !text.contains("U999") && !text.contains("sec*"));
        }
    }

    #[test]
    fn hidden_characters_are_shown_and_warned_about_above_the_command() {
        let mut r = with_command("DELETE FROM accts WHERE name <> 'admin\u{200b}';");
        r.justification = Some("only 'admin\u{200b}' \u{202e}evil".into());
        r.approval_groups[1].group = "sec\u{200b}".into();
        let (_, value) = card(&r);
        assert_eq!(
            command_parts(&value),
            ["DELETE FROM accts WHERE name <> 'admin\\u{200b}';"]
        );
        let warning = block_with(&value, "Warning");
        assert_eq!(
            value[warning]["text"],
            json!({"type": "plain_text", "emoji": false, "text": "⚠ Warning: this command contains \
                1 invisible character (U+200B at line 1, column 39)"})
        );
        assert!(warning < block_with(&value, "rich_text_preformatted"));
        assert_eq!(
            value[2]["fields"][9]["text"],
            "only 'admin\\u{200b}' \\u{202e}evil"
        );
        assert_eq!(
            of_type(&value, "button")[0]["text"]["text"],
            "Approve as sec\\u{200b}"
        );
        // Nowhere does the card show 'admin' for 'admin\u{200b}', nor any hidden character.
        for s in strings(&value) {
            assert!(!s.contains("'admin'"), "{s}");
            if !s.starts_with('{') {
                assert!(
                    !s.chars().any(|c| c != '\n' && display::is_hidden(c)),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn every_kind_of_warning_gets_its_own_line() {
        let (_, value) = card(&with_command("SELECT 'аdmin' \u{202e} FROM ВОВ;\u{200b}"));
        let warnings: Vec<String> = texts(&value, "plain_text")
            .into_iter()
            .filter(|t| t.starts_with("⚠ Warning: "))
            .collect();
        let expected: Vec<String> = display::command("SELECT 'аdmin' \u{202e} FROM ВОВ;\u{200b}")
            .warnings
            .iter()
            .map(|w| format!("⚠ Warning: {w}"))
            .collect();
        assert_eq!(expected.len(), 4);
        assert_eq!(warnings, expected);
    }

    /// A command of `n` characters with long and short lines, hidden characters (escaped to
    /// several characters each), CJK, quotes and backslashes (escaped again by JSON), and one
    /// line far longer than a part.
    fn long_command(n: usize) -> String {
        let fillers = [
            "abc",
            "\u{200b}x\u{200b}",
            "名前",
            "\"quoted\" \\ back",
            "z",
        ];
        let mut command = String::new();
        let mut i = 0;
        while command.chars().count() < n {
            if i == 7 {
                command.push_str(&"y".repeat(7_000));
                command.push('\n');
            }
            let filler = fillers[i % fillers.len()].repeat(1 + i % 37);
            command.push_str(&format!(
                "UPDATE t{i} SET note = '{filler}' WHERE id = {i};\n"
            ));
            i += 1;
        }
        command.chars().take(n).collect()
    }

    /// The `N` of "⚠ N more characters of this command are not shown".
    fn not_shown(value: &Value) -> Option<usize> {
        let note = texts(value, "text")
            .into_iter()
            .find(|t| t.contains("more characters of this command are not shown"))?;
        let n = note.trim_start_matches("⚠ ").split(' ').next().unwrap();
        Some(n.parse().unwrap())
    }

    /// Byte offsets in the shown command where one character's shown form ends.
    fn cut_points(command: &str) -> std::collections::HashSet<usize> {
        let mut at = 0;
        let mut points = std::collections::HashSet::from([0]);
        for c in command.chars() {
            at += display::visible(&c.to_string()).len();
            points.insert(at);
        }
        points
    }

    #[test]
    fn a_50000_character_command_is_shown_in_parts_up_to_a_note_that_counts_the_rest() {
        let command = long_command(50_000);
        assert_eq!(command.chars().count(), 50_000);
        let r = with_command(&command);
        let (message, value) = card(&r);
        let shown = display::command(&command).text;
        let parts = command_parts(&value);
        let joined = parts.concat();
        assert!(shown.starts_with(&joined));
        assert!(parts.len() > 1);
        // Every cut falls between two characters' shown forms, never inside an escape.
        let points = cut_points(&command);
        let mut at = 0;
        for part in &parts {
            at += part.len();
            assert!(points.contains(&at), "cut inside an escape at {at}");
        }
        // Shown plus counted is the whole shown command.
        let rest = not_shown(&value).expect("a note");
        assert_eq!(joined.chars().count() + rest, shown.chars().count());
        assert!(rest > 0);
        // The note gives the start of the SHA-256 and links to the request, after the command.
        let note = block_with(&value, "are not shown");
        assert!(value[note].to_string().contains(&r.command_sha256[..12]));
        assert_eq!(of_type(&value[note], "link")[0]["url"], URL);
        assert!(note > block_with(&value, "rich_text_preformatted"));
        // The buttons are still there, last; the message as a whole stays within its bounds.
        assert_eq!(value.as_array().unwrap().last().unwrap()["type"], "actions");
        assert!(message.blocks.len() <= MAX_BLOCKS - BLOCK_HEADROOM);
        // Much of the room goes to the command.
        assert!(joined.len() > 25_000, "only {} bytes shown", joined.len());
    }

    #[test]
    fn parts_end_at_line_breaks_where_they_can() {
        let command: String = (0..200)
            .map(|i| format!("{i:03} {}\n", "x".repeat(95)))
            .collect();
        let (_, value) = card(&with_command(&command));
        let parts = command_parts(&value);
        assert_eq!(parts.concat(), command);
        assert_eq!(not_shown(&value), None);
        assert!(parts.len() >= 7);
        for part in &parts[..parts.len() - 1] {
            assert!(part.ends_with('\n'), "{:?}", &part[part.len() - 20..]);
        }
    }

    #[test]
    fn a_command_of_hidden_characters_is_cut_between_whole_escapes() {
        let command = "\u{200b}".repeat(50_000);
        let (_, value) = card(&with_command(&command));
        let parts = command_parts(&value);
        for part in &parts {
            assert_eq!(part.replace("\\u{200b}", ""), "", "a part cut an escape");
        }
        let shown: usize = parts.iter().map(|p| p.chars().count()).sum();
        assert_eq!(
            shown + not_shown(&value).unwrap(),
            50_000 * "\\u{200b}".len()
        );
    }

    #[test]
    fn json_escaping_counts_against_the_message_bound() {
        // Each `"` and `\` doubles in JSON; check_limits (in card) holds the total.
        let command = "\"\\".repeat(30_000);
        let (message, value) = card(&with_command(&command));
        assert!(not_shown(&value).unwrap() > 0);
        assert!(serde_json::to_vec(&message.blocks).unwrap().len() <= MESSAGE_MAX);
    }

    #[test]
    fn a_short_command_has_no_note() {
        let (_, value) = card(&request());
        assert_eq!(not_shown(&value), None);
    }

    #[test]
    fn a_dm_copy_offers_only_the_recipients_pending_groups() {
        let r = request();
        let mine = vec![
            "dba".to_string(),
            "audit".to_string(),
            "unknown".to_string(),
        ];
        let message = request_card(&r, URL, Buttons::Groups(&mine));
        check_limits(&message);
        let value = serde_json::to_value(&message.blocks).unwrap();
        let ids: Vec<&str> = of_type(&value, "button")
            .iter()
            .map(|b| b["action_id"].as_str().unwrap())
            .collect();
        // dba is approved already; audit is at index 2 of the request's groups.
        assert_eq!(ids, ["approve.2", "reject"]);
        let none: Vec<String> = Vec::new();
        let message = request_card(&r, URL, Buttons::Groups(&none));
        let value = serde_json::to_value(&message.blocks).unwrap();
        let ids: Vec<Value> = of_type(&value, "button")
            .iter()
            .map(|b| b["action_id"].clone())
            .collect();
        assert_eq!(ids, ["reject"]);
    }

    #[test]
    fn long_group_names_are_cut_visibly_on_buttons_but_carried_whole() {
        let mut r = request();
        let long = format!("{}&{}", "g".repeat(100), "h".repeat(100));
        r.approval_groups[1].group = long.clone();
        let (_, value) = card(&r);
        let button = of_type(&value, "button")[0];
        let text = button["text"]["text"].as_str().unwrap();
        assert!(text.starts_with("Approve as gggg"));
        assert!(text.ends_with('…'));
        assert!(text.len() <= BUTTON_TEXT_MAX);
        let carried: ButtonValue = serde_json::from_str(button["value"].as_str().unwrap()).unwrap();
        assert_eq!(carried.group, Some(long));
    }

    #[test]
    fn many_groups_split_into_actions_blocks_of_25() {
        let mut r = request();
        r.approval_groups = (0..30).map(|i| group(&format!("g{i}"), None)).collect();
        let (_, value) = card(&r);
        let actions = of_type(&value, "actions");
        let sizes: Vec<usize> = actions
            .iter()
            .map(|a| a["elements"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [25, 6]);
        let ids: Vec<&str> = of_type(&value, "button")
            .iter()
            .map(|b| b["action_id"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..30)
            .map(contract::approve_action)
            .chain([contract::REJECT_ACTION.to_string()])
            .collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn groups_beyond_what_a_card_can_hold_are_counted_not_dropped() {
        let mut r = request();
        r.approval_groups = (0..60)
            .map(|i| group(&format!("group-{i}-{}", "n".repeat(60)), None))
            .collect();
        let mut too_long = group(&"x".repeat(BUTTON_VALUE_MAX), None);
        too_long.group.push('!');
        r.approval_groups.insert(0, too_long);
        let (_, value) = card(&r);
        assert_eq!(of_type(&value, "button").len(), APPROVE_BUTTONS_MAX + 1);
        let all = texts(&value, "plain_text").join("\n");
        assert!(
            all.contains("12 more group(s) cannot be approved from this message"),
            "{all}"
        );
        assert!(all.contains("more groups: see the request page"), "{all}");
        assert!(
            all.contains(" more."),
            "the status sentence counts the groups it leaves out"
        );
    }

    #[test]
    fn huge_user_fields_are_cut_visibly_within_slacks_limits() {
        let mut r = request();
        r.justification = Some("&".repeat(100_000));
        r.requester = "r".repeat(10_000);
        r.status = Status::Rejected;
        r.rejection = Some(Rejection {
            by: "b".repeat(10_000),
            reason: "<".repeat(100_000),
            at: t0(),
            via: "slack".into(),
        });
        let (message, value) = card(&r);
        let justification = value[2]["fields"][9]["text"].as_str().unwrap();
        assert!(justification.len() <= JUSTIFICATION_MAX);
        assert!(justification.ends_with('…'));
        assert_eq!(justification.trim_end_matches('…').replace("&amp;", ""), "");
        let sentence = value[1]["text"]["text"].as_str().unwrap();
        assert!(sentence.starts_with("Rejected by bbbb"));
        assert!(sentence.ends_with("&lt;&lt;…"));
        assert!(message.text.len() < 600, "{}", message.text);
        assert!(
            message.text.contains(": Rejected by bbbb"),
            "{}",
            message.text
        );
        assert!(message.text.ends_with("bbbb…"), "{}", message.text);
        let outcome = outcome_message(&r, URL);
        check_limits(&outcome);
    }

    #[test]
    fn a_decided_card_says_the_outcome_and_has_no_buttons() {
        let rejected = {
            let mut r = decided(Status::Rejected);
            r.rejection = Some(Rejection {
                by: "bob@x.com".into(),
                reason: "not during the <!here> freeze\nsorry".into(),
                at: t0(),
                via: "slack".into(),
            });
            r
        };
        let executed = {
            let mut r = decided(Status::Executed);
            r.result = Some(ExecutionResult {
                results: vec![
                    StatementResult {
                        tag: Some("UPDATE 1".into()),
                        rows_affected: Some(1),
                        ..Default::default()
                    },
                    StatementResult {
                        columns: vec!["id".into()],
                        rows: vec![vec![Some("1".into())]; 3],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            });
            r
        };
        let shell = {
            let mut r = decided(Status::Executed);
            r.result = Some(ExecutionResult {
                exit_code: Some(2),
                truncated: true,
                ..Default::default()
            });
            r
        };
        let failed = {
            let mut r = decided(Status::Failed);
            r.result = Some(ExecutionResult {
                error: Some("syntax error at or near \"FROM\"\nLINE 1: <bad>".into()),
                ..Default::default()
            });
            r
        };
        let running = {
            let mut r = decided(Status::Running);
            r.claimed_by = Some("agent-7".into());
            r
        };
        let cases = [
            (
                decided(Status::Approved),
                "✅ Approved",
                "Approved; waiting for an agent to run it on prod-db.",
                "Approved",
            ),
            (
                rejected,
                "⛔ Rejected",
                "Rejected by bob@x.com (slack): not during the &lt;!here&gt; freeze\\nsorry",
                "Rejected by bob@x.com",
            ),
            (
                decided(Status::Expired),
                "⏰ Expired",
                "Expired at 2026-12-06 10:15 UTC, after 30m, without approval from security, audit.",
                "Expired",
            ),
            (
                decided(Status::Cancelled),
                "✖️ Cancelled",
                "Cancelled at 2026-12-06 09:50 UTC.",
                "Cancelled",
            ),
            (running, "⚙️ Running", "Running on agent-7.", "Running"),
            (
                executed,
                "✅ Executed",
                "Executed: UPDATE 1, 3 rows",
                "Executed",
            ),
            (
                shell,
                "✅ Executed",
                "Executed: exit code 2 (output truncated)",
                "Executed",
            ),
            (
                failed,
                "❌ Failed",
                "Failed: syntax error at or near \"FROM\"\\nLINE 1: &lt;bad&gt;",
                "Failed",
            ),
        ];
        for (r, headline, sentence, outcome) in cases {
            let (message, value) = card(&r);
            assert_eq!(value[0]["text"]["text"], headline);
            assert_eq!(value[1]["text"]["text"], sentence);
            assert!(of_type(&value, "actions").is_empty(), "{headline}");
            assert!(of_type(&value, "button").is_empty(), "{headline}");
            assert_eq!(
                message.text,
                format!("alice@x.com wants to run a command on prod-db: {outcome}")
            );
            assert_eq!(value[2]["fields"][6]["text"], "*Decided*");
            // The command is still shown exactly.
            assert_eq!(command_parts(&value), [r.command.as_str()]);
        }
    }

    #[test]
    fn groups_still_pending_are_closed_once_the_request_is_decided() {
        let (_, value) = card(&decided(Status::Expired));
        assert_eq!(
            value[4]["text"]["text"],
            "Approvals\n✓ dba — approved by bob@x.com (slack)\n\
             ✗ security — closed (the request is expired)\n✗ audit — closed (the request is expired)"
        );
    }

    #[test]
    fn an_empty_command_is_said_not_shown_as_an_empty_box() {
        let (_, value) = card(&with_command(""));
        assert!(command_parts(&value).is_empty());
        assert!(texts(&value, "plain_text").contains(&"(The command is empty.)".to_string()));
    }

    #[test]
    fn the_requester_hears_the_outcome_with_a_link() {
        let mut rejected = decided(Status::Rejected);
        rejected.rejection = Some(Rejection {
            by: "bob@x.com".into(),
            reason: "<!channel> not now".into(),
            at: t0(),
            via: "slack".into(),
        });
        let mut executed = decided(Status::Executed);
        executed.result = Some(ExecutionResult {
            results: vec![StatementResult {
                tag: Some("DELETE 2".into()),
                rows_affected: Some(2),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut failed = decided(Status::Failed);
        failed.result = Some(ExecutionResult {
            error: Some("permission denied\nfor table accts".into()),
            ..Default::default()
        });
        let mut approved = decided(Status::Approved);
        approved.approval_groups[1] = group("security", Some("carol@x.com"));
        approved.approval_groups[2] = group("audit", Some("bob@x.com"));
        let cases = [
            (
                rejected,
                "Your command on prod-db was rejected by bob@x.com (slack): &lt;!channel&gt; not now",
            ),
            (
                decided(Status::Expired),
                "Your command on prod-db expired at 2026-12-06 10:15 UTC, after 30m, without approval from security, audit.",
            ),
            (
                decided(Status::Cancelled),
                "Your command on prod-db was cancelled.",
            ),
            (
                approved,
                "Your command on prod-db was approved by bob@x.com for dba, carol@x.com for security, bob@x.com for audit; it runs when an agent picks it up.",
            ),
            (executed, "Your command on prod-db was executed: DELETE 2"),
            (
                failed,
                "Your command on prod-db failed: permission denied\\nfor table accts",
            ),
        ];
        for (r, sentence) in cases {
            let message = outcome_message(&r, URL);
            check_limits(&message);
            let value = serde_json::to_value(&message.blocks).unwrap();
            assert_eq!(message.text, sentence);
            assert_eq!(
                value[0]["text"],
                json!({"type": "plain_text", "text": sentence, "emoji": false})
            );
            assert_eq!(of_type(&value, "link")[0]["url"], URL);
            assert!(value[1].to_string().contains("Request req-1: "));
            assert!(
                !message.text.contains("DELETE FROM") && !message.text.contains("UPDATE accounts")
            );
        }
    }
}
