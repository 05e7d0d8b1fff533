//! Validation of names that cross the wire. The controller may only *name*
//! things the agent's config declares, and names end up in paths, so they are
//! checked on both sides with the same rules.

/// App names: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn check_app_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid app name {name:?}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// Release ids become directory names under `ROOT/releases/`:
/// `[A-Za-z0-9][A-Za-z0-9._-]{0,99}`.
pub fn check_release_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid release id {id:?}: use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit"
        ))
    }
}

/// Deployment ids as the agent records them (issue 13: a watchdog names
/// its deployment): the release id's characters, 1-100 of them.
pub fn check_deployment_id(id: &str) -> Result<(), String> {
    check_release_id(id).map_err(|_| {
        format!(
            "invalid deployment id {id:?}: use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    })
}

/// Lowercase hex sha256, 64 characters.
pub fn check_sha256(hex: &str) -> Result<(), String> {
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid sha256 {hex:?}: expected 64 lowercase hex digits"
        ))
    }
}

/// Idempotency keys: printable ASCII without spaces, 1-200 characters.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if !key.is_empty() && key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "invalid idempotency key {key:?}: use 1-200 printable ASCII characters without spaces"
        ))
    }
}

/// Git refs a controller may name for a git-sourced release (a branch, a
/// tag, or a commit id): git's `check-ref-format` rules for the name, plus
/// what keeps it from ever being read as an option or a revision
/// expression. At most 200 bytes.
pub fn check_git_ref(r: &str) -> Result<(), String> {
    let why = if r.is_empty() {
        Some("it is empty")
    } else if r.len() > 200 {
        Some("it is longer than 200 bytes")
    } else if r.starts_with('-') {
        Some("it starts with '-' (it could be read as an option)")
    } else if r.chars().any(|c| c.is_control() || c == ' ') {
        Some("it contains a space or a control character")
    } else if r.contains(['~', '^', ':', '?', '*', '[', '\\']) {
        Some("it contains one of ~ ^ : ? * [ \\ (revision expressions are not accepted)")
    } else if r.contains("..") || r.contains("@{") || r == "@" {
        Some("it contains `..` or `@{`, or is `@`")
    } else if r.starts_with('/') || r.ends_with('/') || r.contains("//") {
        Some("it starts or ends with '/' or has an empty component")
    } else if r.ends_with('.') {
        Some("it ends with '.'")
    } else if r
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("a component starts with '.' or ends with `.lock`")
    } else if r.ends_with("HEAD") && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        Some("it names a symbolic ref like HEAD, which means nothing in the agent's mirror")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "invalid git ref {r:?}: {why}; name a branch, a tag or a commit id (e.g. \"main\", \"v1.4.2\", a 40-hex commit)"
        )),
    }
}

/// A watchdog trigger's name: 1-63 letters, digits, '-' or '_' (issue 13).
pub fn check_trigger_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid trigger name {name:?}: use 1-63 letters, digits, '-' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_ids() {
        assert!(check_release_id("v2.1-rc_3").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(101)] {
            assert!(check_release_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_names() {
        assert!(check_app_name("shop-2").is_ok());
        for bad in ["", "Shop", "-x", "a/b", "a.b"] {
            assert!(check_app_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha() {
        assert!(check_sha256(&"a".repeat(64)).is_ok());
        assert!(check_sha256(&"A".repeat(64)).is_err());
        assert!(check_sha256("abc").is_err());
    }

    #[test]
    fn git_refs() {
        for good in [
            "main",
            "v1.4.2",
            "release/2024-06",
            "feature/x_y",
            "c49f474726f1e29b6cee0d17f0d553a95822f98f",
            "refs/tags/v1",
            "ñandú",
        ] {
            assert!(check_git_ref(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=touch /tmp/pwned",
            "a b",
            "a\nb",
            "a\tb",
            "main~1",
            "main^",
            "HEAD",
            "FETCH_HEAD",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a..b",
            "a@{1}",
            "@",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".hidden",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            &"x".repeat(201),
        ] {
            let e = check_git_ref(bad).unwrap_err();
            assert!(e.contains("invalid git ref"), "{bad}: {e}");
        }
    }
}
