//! The `Authorization` header's bearer token.

/// The token of an `Authorization: Bearer <token>` header: the scheme is
/// case-insensitive (RFC 9110 section 11.1), spaces after it are skipped.
pub(super) fn token(h: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = h.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let t: &[u8] = b"admin-token-0123456789";
        for h in [
            "Bearer admin-token-0123456789",
            "bearer admin-token-0123456789",
            "BEARER  admin-token-0123456789",
        ] {
            assert_eq!(token(h.as_bytes()), Some(t), "{h}");
        }
        for h in [
            "Bearer",
            "Bearer ",
            "Bearex admin-token-0123456789",
            "Basic admin-token-0123456789",
            "Beareradmin-token-0123456789",
        ] {
            assert_eq!(token(h.as_bytes()), None, "{h}");
        }
    }
}
