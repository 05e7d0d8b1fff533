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
}
