//! Auth mail templates: a subject and an HTML body per kind of mail (`auth.templates.*`),
//! with GoTrue's template variables — `{{ .ConfirmationURL }}`, `{{ .Token }}`,
//! `{{ .TokenHash }}`, `{{ .SiteURL }}`, `{{ .Email }}`, `{{ .NewEmail }}`,
//! `{{ .RedirectTo }}`, `{{ .Data }}` / `{{ .Data.<key> }}` (the user's metadata) — so
//! templates written for Supabase work unchanged. Values are HTML-escaped in bodies, as Go's
//! `html/template` does; subjects take them as they are.
//!
//! Every mail also carries a plain-text alternative from the built-in text of its kind, so
//! text-only readers (and tests) always find the link and the code.
//!
//! Must not: evaluate anything but variable references (no Go template logic: `if`,
//! `range` … are left in the text as written).

use crate::config::{MailTemplateConfig, MailTemplatesConfig};
use serde_json::Value;

/// Built-in subject, HTML body and text body of a template kind.
fn builtin(kind: &str) -> (&'static str, &'static str, &'static str) {
    match kind {
        "invite" => (
            "You have been invited",
            "<h2>You have been invited</h2>\n<p>You have been invited to create a user on {{ .SiteURL }}. Follow this link to accept the invite:</p>\n<p><a href=\"{{ .ConfirmationURL }}\">Accept the invite</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n",
            "You have been invited to create a user on {{ .SiteURL }}. Follow this link to accept the invite:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
        "magic_link" => (
            "Your sign-in link",
            "<h2>Your sign-in link</h2>\n<p>Follow this link to sign in:</p>\n<p><a href=\"{{ .ConfirmationURL }}\">Sign in</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n",
            "Follow this link to sign in:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
        "recovery" => (
            "Reset your password",
            "<h2>Reset your password</h2>\n<p>Follow this link to reset the password for {{ .Email }}:</p>\n<p><a href=\"{{ .ConfirmationURL }}\">Reset password</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n",
            "Follow this link to reset the password for {{ .Email }}:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
        "email_change" => (
            "Confirm email change",
            "<h2>Confirm change of email</h2>\n<p>Follow this link to confirm the update of your email from {{ .Email }} to {{ .NewEmail }}:</p>\n<p><a href=\"{{ .ConfirmationURL }}\">Change email</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n",
            "Follow this link to confirm the update of your email from {{ .Email }} to {{ .NewEmail }}:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
        "reauthentication" => (
            "Confirm reauthentication",
            "<h2>Confirm reauthentication</h2>\n<p>Enter this code: {{ .Token }}</p>\n",
            "Confirm it is you: enter this code: {{ .Token }}\n",
        ),
        _ => (
            "Confirm your signup",
            "<h2>Confirm your signup</h2>\n<p>Follow this link to confirm {{ .Email }}:</p>\n<p><a href=\"{{ .ConfirmationURL }}\">Confirm your mail</a></p>\n<p>Or enter this code: {{ .Token }}</p>\n",
            "Follow this link to confirm {{ .Email }}:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
    }
}

/// The template kind (`auth.templates.<kind>`) of a mail kind (a one-time token's type).
pub fn template_kind(mail_kind: &str) -> &'static str {
    match mail_kind {
        "invite" => "invite",
        "magiclink" => "magic_link",
        "recovery" => "recovery",
        "email_change" | "email_change_current" | "email_change_new" => "email_change",
        "reauthentication" => "reauthentication",
        _ => "confirmation",
    }
}

#[derive(Debug, Clone)]
struct Template {
    subject: String,
    html: String,
    text: &'static str,
}

/// The templates of every kind, resolved once when the mailer starts.
#[derive(Debug, Clone)]
pub struct Templates {
    by_kind: Vec<(&'static str, Template)>,
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// HTML body.
    pub html: String,
    /// Plain-text alternative.
    pub text: String,
}

impl Templates {
    /// Templates from config; a `content_path` that cannot be read is an error.
    pub fn load(cfg: &MailTemplatesConfig) -> Result<Templates, String> {
        let mut by_kind = Vec::new();
        for (kind, t) in cfg.entries() {
            by_kind.push((kind, Self::one(kind, t)?));
        }
        Ok(Templates { by_kind })
    }

    fn one(kind: &'static str, t: &MailTemplateConfig) -> Result<Template, String> {
        let (subject, html, text) = builtin(kind);
        let html = if !t.content_path.is_empty() {
            std::fs::read_to_string(&t.content_path).map_err(|e| {
                format!(
                    "auth.templates.{kind}.content_path {:?}: {e}",
                    t.content_path
                )
            })?
        } else if !t.content.is_empty() {
            t.content.clone()
        } else {
            html.to_string()
        };
        let subject = if t.subject.is_empty() {
            subject.to_string()
        } else {
            t.subject.clone()
        };
        Ok(Template {
            subject,
            html,
            text,
        })
    }

    /// The built-in templates only.
    pub fn builtin() -> Templates {
        Templates::load(&MailTemplatesConfig::default()).unwrap_or(Templates {
            by_kind: Vec::new(),
        })
    }

    /// Renders the mail of `mail_kind` with the variables of a mail job's payload
    /// (`link`, `token`, `token_hash`, `site_url`, `email`/`to`, `new_email`,
    /// `redirect_to`, `data`).
    pub fn render(&self, mail_kind: &str, payload: &Value) -> Rendered {
        let kind = template_kind(mail_kind);
        let fallback;
        let t = match self.by_kind.iter().find(|(k, _)| *k == kind) {
            Some((_, t)) => t,
            None => {
                let (subject, html, text) = builtin(kind);
                fallback = Template {
                    subject: subject.into(),
                    html: html.into(),
                    text,
                };
                &fallback
            }
        };
        Rendered {
            subject: substitute(&t.subject, payload, false),
            html: substitute(&t.html, payload, true),
            text: substitute(t.text, payload, false),
        }
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The value of one `.Name` (or `.Data.key`) reference; `None` for unknown names.
fn variable(name: &str, p: &Value) -> Option<String> {
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let shown = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Some(match name {
        "ConfirmationURL" => s("link"),
        "Token" => s("token"),
        "TokenHash" => s("token_hash"),
        "SiteURL" => s("site_url"),
        "Email" => p
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| s("to")),
        "NewEmail" => s("new_email"),
        "RedirectTo" => s("redirect_to"),
        "Data" => p.get("data").map(shown).unwrap_or_default(),
        other => {
            let key = other.strip_prefix("Data.")?;
            p.get("data")
                .and_then(|d| d.get(key))
                .map(shown)
                .unwrap_or_default()
        }
    })
}

/// Replaces `{{ .Name }}` (any inner whitespace) with its value; anything else between
/// braces stays as written.
fn substitute(template: &str, p: &Value, html: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = after[..end].trim();
        match inner.strip_prefix('.').and_then(|n| variable(n, p)) {
            Some(v) if html => out.push_str(&escape_html(&v)),
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload() -> Value {
        json!({"link": "http://h/auth/v1/verify?token=abc&type=invite", "token": "123456",
               "token_hash": "abc", "site_url": "http://app.test", "to": "new@x.test",
               "email": "old@x.test", "new_email": "new@x.test", "redirect_to": "http://app.test/in",
               "data": {"name": "Ada <3", "n": 2}})
    }

    #[test]
    fn variables_with_any_spacing_escaped_in_html_only() {
        let mut cfg = MailTemplatesConfig::default();
        cfg.invite.subject = "Join {{.SiteURL}} as {{ .Data.name }}".into();
        cfg.invite.content =
            "<a href=\"{{ .ConfirmationURL }}\">go</a> {{.Token}} {{ .TokenHash }} {{ .Email }} \
             {{ .NewEmail }} {{ .RedirectTo }} {{ .Data.n }} {{ .Data.missing }}| {{ .Nope }} {{ if .X }}"
                .into();
        let t = Templates::load(&cfg).unwrap();
        let r = t.render("invite", &payload());
        assert_eq!(r.subject, "Join http://app.test as Ada <3");
        assert_eq!(
            r.html,
            "<a href=\"http://h/auth/v1/verify?token=abc&amp;type=invite\">go</a> 123456 abc old@x.test \
             new@x.test http://app.test/in 2 | {{ .Nope }} {{ if .X }}"
        );
        // The text alternative is the built-in one, unescaped.
        assert!(r
            .text
            .contains("http://h/auth/v1/verify?token=abc&type=invite"));
        assert!(r.text.contains("code: 123456"));
    }

    #[test]
    fn defaults_and_files() {
        let t = Templates::builtin();
        let r = t.render("email_change_new", &payload());
        assert_eq!(r.subject, "Confirm email change");
        assert!(
            r.html.contains("from old@x.test to new@x.test"),
            "{}",
            r.html
        );
        assert_eq!(
            t.render("signup", &payload()).subject,
            "Confirm your signup"
        );
        assert_eq!(
            t.render("magiclink", &payload()).subject,
            "Your sign-in link"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("recovery.html");
        std::fs::write(&f, "<p>Reset: {{ .ConfirmationURL }}</p>").unwrap();
        let mut cfg = MailTemplatesConfig::default();
        cfg.recovery.content = "ignored: the file wins".into();
        cfg.recovery.content_path = f.to_string_lossy().into_owned();
        let r = Templates::load(&cfg)
            .unwrap()
            .render("recovery", &payload());
        assert!(r.html.starts_with("<p>Reset: http://h/"), "{}", r.html);
        cfg.recovery.content_path = dir.path().join("absent.html").to_string_lossy().into();
        assert!(Templates::load(&cfg).is_err());
    }
}
