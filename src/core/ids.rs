//! Ids the server derives from what a client sent, so a retried request finds what its
//! first attempt made instead of making a second one.

use parley_protocol::UserId;

/// Stable namespace for ids derived from client request ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7061_726c_6579_0000_8000_0000_0000_0001);

fn derived(prefix: &str, parts: &[&str]) -> String {
    let name = parts.join("\u{0}");
    format!(
        "{prefix}-{}",
        uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).simple()
    )
}

/// The one direct conversation of two users, whoever writes first.
pub fn direct(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    derived("d", &[first, second])
}

/// The conversation an InMail request opens.
pub fn inmail(sender: &str, request: &str) -> String {
    derived("i", &[sender, request])
}

/// The group a `create_group` request opens.
pub fn group(creator: &str, request: &str) -> String {
    derived("g", &[creator, request])
}

/// The report a `report` request files.
pub fn report(reporter: &UserId, request: &str) -> String {
    derived("r", &[reporter, request])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_direct_conversation_is_the_same_from_both_sides() {
        assert_eq!(super::direct("ann", "ben"), super::direct("ben", "ann"));
        assert_ne!(super::direct("ann", "ben"), super::direct("ann", "cat"));
    }
}
