//! The page shell (header, navigation, live-update script) and small rendering helpers
//! shared by the pages: state badges, links to requests, Promises and commits.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The stylesheet, served at `/ui/static/console.css`.
pub const CSS: &str = include_str!("static/console.css");
/// The live-update script, served at `/ui/static/console.js`.
pub const JS: &str = include_str!("static/console.js");

/// Which navigation entry is highlighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Overview, Promise and request pages.
    Overview,
    /// The audit page.
    Audit,
}

/// A whole page: `title`, the snapshot `version` the live script compares against, and
/// `body` inside `<main>`.
pub fn page(title: &str, version: &str, nav: Nav, body: Markup) -> Markup {
    let here = |n: Nav| if n == nav { "here" } else { "" };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · promised" }
                link rel="stylesheet" href="/ui/static/console.css";
            }
            body data-version=(version) {
                header {
                    a.brand href="/ui/" { "promised" }
                    a class=(here(Nav::Overview)) href="/ui/" { "Overview" }
                    a class=(here(Nav::Audit)) href="/ui/audit" { "Audit" }
                    span #live { "live" }
                }
                main { (body) }
                script src="/ui/static/console.js" {}
            }
        }
    }
}

/// The CSS class of a state word: `ok`, `bad`, `warn` or none.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "Reconciled" | "Ready" | "Available" | "True" | "ready" | "healthy" | "Completed"
        | "Succeeded" => "ok",
        "Failing" | "Failed" | "NotReady" | "Unavailable" | "False" | "unhealthy" | "Invalid"
        | "Aborted" => "bad",
        "Pending" | "Suspended" | "Unknown" | "Warning" | "degraded" | "unknown" | "Paused"
        | "InProgress" | "Running" => "warn",
        _ => "",
    }
}

/// A state badge.
pub fn badge(state: &str) -> Markup {
    html! { span class={ "state " (state_class(state)) } { (state) } }
}

/// `s` percent-encoded for one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The console path of a request key `<promise>/<namespace>/<name>` (or of a Promise key
/// `promise/<name>`).
pub fn object_href(key: &str) -> String {
    if let Some(name) = key.strip_prefix("promise/") {
        return promise_href(name);
    }
    let parts: Vec<&str> = key.splitn(3, '/').collect();
    match parts.as_slice() {
        [p, ns, n] => format!("/ui/requests/{}/{}/{}", seg(p), seg(ns), seg(n)),
        _ => "/ui/".into(),
    }
}

/// The console path of a Promise.
pub fn promise_href(name: &str) -> String {
    format!("/ui/promises/{}", seg(name))
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A commit id, linked to `url` when one is configured.
pub fn commit(id: &str, url: Option<&str>) -> Markup {
    html! {
        @match url {
            Some(u) => a href=(u) title=(id) { code { (short(id)) } },
            None => code title=(id) { (short(id)) },
        }
    }
}

/// A link to a request or Promise page showing its key.
pub fn object_link(key: &str) -> Markup {
    html! { a href=(object_href(key)) { (key) } }
}

/// Previous/next links for a paged list: `page` (1-based) of `pages`, with `link(page)`.
pub fn pager(page: usize, pages: usize, total: usize, link: impl Fn(usize) -> String) -> Markup {
    html! {
        div.pager {
            @if page > 1 { a rel="prev" href=(link(page - 1)) { "← previous" } }
            span.muted { "page " (page) " of " (pages.max(1)) " · " (total) " in all" }
            @if page < pages { a rel="next" href=(link(page + 1)) { "next →" } }
        }
    }
}

/// Text as-is inside `<pre>` (escaped by maud).
pub fn pre(text: &str) -> Markup {
    html! { pre { (text) } }
}

/// A non-breaking placeholder for an empty cell.
pub fn none() -> Markup {
    html! { span.muted { (PreEscaped("&mdash;")) } }
}
