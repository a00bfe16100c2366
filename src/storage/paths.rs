//! Validation of bucket ids and object names (pure). Names never become file-system paths
//! (the bytes are stored under their version uuid, see `backend`), so these rules are about
//! clear errors and Supabase compatibility, not the only guard against traversal.

use crate::error::{ApiError, ErrorCode};

/// Longest object name, bytes (Supabase's limit).
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest bucket id, characters.
pub const MAX_BUCKET_CHARS: usize = 100;

/// A bucket id: 1–100 characters of Supabase's set (letters, digits, `_ ! - . * ' ( ) space
/// & $ @ = ; : + , ?`), and not `.` or `..`.
pub fn bucket(id: &str) -> Result<&str, ApiError> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_BUCKET_CHARS
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_!-.*'() &$@=;:+,?".contains(c));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidBucketName,
            "Bucket name invalid",
        ))
    }
}

/// An object name: 1–1024 bytes, no NUL or other control character, no backslash, no
/// leading `/`, and no empty, `.` or `..` segment.
pub fn object(name: &str) -> Result<&str, ApiError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.starts_with('/')
        || name.chars().any(|c| c.is_control() || c == '\\')
        || name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        let shown: String = name.chars().take(100).filter(|c| !c.is_control()).collect();
        Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!("Invalid key: {shown}"),
        ))
    } else {
        Ok(name)
    }
}

/// A list prefix: like an object name, but empty is fine and a trailing `/` is allowed.
pub fn prefix(p: &str) -> Result<&str, ApiError> {
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    if trimmed.is_empty() {
        return Ok(p);
    }
    object(trimmed).map(|_| p)
}

/// Whether `mime` is allowed by a bucket's list (exact, `type/*` or `*/*`, case-insensitive,
/// parameters such as `;charset=` ignored).
pub fn mime_allowed(allowed: &[String], mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (ty, _) = m.split_once('/').unwrap_or((m.as_str(), ""));
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_suffix("/*") {
            Some(t) => t == "*" || t == ty,
            None => a == m,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["avatars", "my-bucket_1", "a.b", "Photos (2024)"] {
            assert!(bucket(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "é", &"x".repeat(101)] {
            assert!(bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names() {
        for ok in [
            "a.png",
            "folder/sub/a b.png",
            "ünï/çødé.txt",
            ".hidden",
            "a..b",
        ] {
            assert!(object(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(1025);
        for bad in [
            "", "/abs", "../up", "a/../b", "a/./b", "a//b", "a/", "a\\b", "a\0b", "a\nb", &long,
        ] {
            assert!(object(bad).is_err(), "{bad:?}");
        }
        assert!(object(&"x".repeat(1024)).is_ok());
        assert!(prefix("").is_ok() && prefix("a/").is_ok() && prefix("../").is_err());
    }

    #[test]
    fn mime_wildcards() {
        let l = vec!["image/*".to_string(), "text/plain".to_string()];
        assert!(mime_allowed(&l, "image/png"));
        assert!(mime_allowed(&l, "IMAGE/JPEG"));
        assert!(mime_allowed(&l, "text/plain;charset=UTF-8"));
        assert!(!mime_allowed(&l, "text/html"));
        assert!(!mime_allowed(&l, "imagex/png"));
        assert!(mime_allowed(&["*/*".to_string()], "application/pdf"));
    }
}
