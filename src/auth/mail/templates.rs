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
//! Templates are Go templates (the subset `gotmpl` evaluates: `if`/`else if`/`else`, `eq` …,
//! `range`, trim markers, comments); a template that does not parse, or names an unknown
//! variable, is refused by config validation with the template's name, and if it still
//! reaches the mailer (a `content_path` edited after start-up checks) the built-in templates
//! are used: a mail is never lost to a template error at send time.
//!
//! Must not: read files or parse anything when a mail is sent (templates are parsed once).

use super::gotmpl::Template as Tmpl;
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

/// The variables a template may name (`{{ .Name }}`), as in GoTrue.
pub const VARIABLES: [&str; 8] = [
    "ConfirmationURL",
    "Token",
    "TokenHash",
    "SiteURL",
    "Email",
    "NewEmail",
    "RedirectTo",
    "Data",
];

#[derive(Debug, Clone)]
struct Template {
    subject: Tmpl,
    html: Tmpl,
    text: Tmpl,
}

/// The templates of every kind, parsed once when the mailer starts.
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

fn parse(src: &str, what: &str) -> Result<Tmpl, String> {
    Tmpl::parse(src, &VARIABLES).map_err(|e| format!("{what}: {e}"))
}

impl Templates {
    /// Templates from config; a `content_path` that cannot be read, or a template that does
    /// not parse, is an error naming the template.
    pub fn load(cfg: &MailTemplatesConfig) -> Result<Templates, String> {
        let mut by_kind = Vec::new();
        for (kind, t) in cfg.entries() {
            by_kind.push((kind, Self::one(kind, t)?));
        }
        Ok(Templates { by_kind })
    }

    /// Every problem of the configured templates, one line each (for config validation).
    pub fn check(cfg: &MailTemplatesConfig) -> Vec<String> {
        cfg.entries()
            .into_iter()
            .filter_map(|(kind, t)| Self::one(kind, t).err())
            .collect()
    }

    fn one(kind: &'static str, t: &MailTemplateConfig) -> Result<Template, String> {
        let (subject, html, text) = builtin(kind);
        let (html, html_src) = if !t.content_path.is_empty() {
            let body = std::fs::read_to_string(&t.content_path).map_err(|e| {
                format!(
                    "auth.templates.{kind}.content_path {:?}: {e}",
                    t.content_path
                )
            })?;
            (
                body,
                format!("auth.templates.{kind}.content_path {:?}", t.content_path),
            )
        } else if !t.content.is_empty() {
            (t.content.clone(), format!("auth.templates.{kind}.content"))
        } else {
            (html.to_string(), format!("built-in {kind} template"))
        };
        let (subject, subject_src) = if t.subject.is_empty() {
            (subject, format!("built-in {kind} subject"))
        } else {
            (t.subject.as_str(), format!("auth.templates.{kind}.subject"))
        };
        Ok(Template {
            subject: parse(subject, &subject_src)?,
            html: parse(&html, &html_src)?,
            text: parse(text, &format!("built-in {kind} text"))?,
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
        let root = variables(payload);
        let plain: fn(&str) -> String = str::to_string;
        match self.by_kind.iter().find(|(k, _)| *k == kind) {
            Some((_, t)) => Rendered {
                subject: t.subject.render(&root, plain),
                html: t.html.render(&root, escape_html),
                text: t.text.render(&root, plain),
            },
            // Only when the built-in templates themselves failed to parse (a bug a unit test
            // catches): the text version still carries the link and the code.
            None => {
                let (subject, _, text) = builtin(kind);
                let text = Tmpl::parse(text, &VARIABLES)
                    .map(|t| t.render(&root, plain))
                    .unwrap_or_default();
                Rendered {
                    subject: subject.into(),
                    html: escape_html(&text),
                    text,
                }
            }
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

/// The template variables of a mail job's payload.
fn variables(p: &Value) -> Value {
    let s = |k: &str| Value::String(p.get(k).and_then(Value::as_str).unwrap_or_default().into());
    let email = match p.get("email").and_then(Value::as_str) {
        Some(e) => Value::String(e.into()),
        None => s("to"),
    };
    serde_json::json!({
        "ConfirmationURL": s("link"),
        "Token": s("token"),
        "TokenHash": s("token_hash"),
        "SiteURL": s("site_url"),
        "Email": email,
        "NewEmail": s("new_email"),
        "RedirectTo": s("redirect_to"),
        "Data": p.get("data").cloned().unwrap_or(Value::Null),
    })
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
             {{ .NewEmail }} {{ .RedirectTo }} {{ .Data.n }} {{ .Data.missing }}|"
                .into();
        let t = Templates::load(&cfg).unwrap();
        let r = t.render("invite", &payload());
        assert_eq!(r.subject, "Join http://app.test as Ada <3");
        assert_eq!(
            r.html,
            "<a href=\"http://h/auth/v1/verify?token=abc&amp;type=invite\">go</a> 123456 abc old@x.test \
             new@x.test http://app.test/in 2 |"
        );
        // The text alternative is the built-in one, unescaped.
        assert!(r
            .text
            .contains("http://h/auth/v1/verify?token=abc&type=invite"));
        assert!(r.text.contains("code: 123456"));
    }

    #[test]
    fn template_logic_is_evaluated_and_values_stay_escaped() {
        let mut cfg = MailTemplatesConfig::default();
        cfg.magic_link.subject =
            "{{ if eq .Data.locale \"de\" \"at\" }}Anmelden{{ else }}Sign in{{ end }}".into();
        cfg.magic_link.content =
            "{{- if eq .Data.locale \"de\" -}}\n<p>Hallo {{ .Data.name }}</p>\n\
             {{- else -}}\n<p>Hello {{ .Data.name }}</p>\n{{- end }}{{/* note */}}"
                .into();
        let t = Templates::load(&cfg).unwrap();
        let mut p = payload();
        p["data"]["locale"] = "at".into();
        let r = t.render("magiclink", &p);
        assert_eq!(r.subject, "Anmelden");
        assert_eq!(r.html, "<p>Hello Ada &lt;3</p>");
        p["data"]["locale"] = "de".into();
        assert_eq!(t.render("magiclink", &p).html, "<p>Hallo Ada &lt;3</p>");
        p["data"] = json!(null);
        assert_eq!(t.render("magiclink", &p).subject, "Sign in");
    }

    #[test]
    fn malformed_templates_are_refused_with_their_name() {
        let mut cfg = MailTemplatesConfig::default();
        assert!(Templates::check(&cfg).is_empty());
        cfg.recovery.content = "<p>{{ if .Token }}code{{ .Token }}</p>".into();
        cfg.invite.subject = "Hi {{ .Nope }}".into();
        let problems = Templates::check(&cfg);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("auth.templates.invite.subject: ")
                && problems[0].contains("unknown variable .Nope"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("auth.templates.recovery.content: ")
                && problems[1].contains("without its {{ end }}"),
            "{problems:?}"
        );
        assert!(Templates::load(&cfg).is_err());
    }

    #[test]
    fn builtin_templates_parse() {
        for (kind, _) in MailTemplatesConfig::default().entries() {
            let t = Templates::builtin();
            assert!(t.by_kind.iter().any(|(k, _)| *k == kind), "{kind}");
        }
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
