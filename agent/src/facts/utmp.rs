//! The utmp login records behind Telegraf's `system` `n_users` and `n_unique_users`.
//!
//! Telegraf (gopsutil `host.Users`) reads `/var/run/utmp` and counts the `USER_PROCESS`
//! records; `n_unique_users` counts their distinct user names. Where the file does not exist
//! (containers, minimal images, this project's CI VM) Telegraf leaves both fields out; so do we.
//!
//! The file is an array of glibc's `struct utmp` (utmp(5)), 384 bytes on every Linux ABI glibc
//! supports (the 64-bit ABIs keep 32-bit times in it for compatibility): `ut_type` is a
//! native-endian `i16` at offset 0 and `ut_user` a NUL-padded `char[32]` at offset 44. The file
//! is written by glibc's login code, whatever libc the agent itself was built with.

/// Size of one `struct utmp` record.
pub const RECORD: usize = 384;
/// `ut_type` of a normal login session.
const USER_PROCESS: i16 = 7;
/// `ut_user`: offset and length.
const USER: (usize, usize) = (44, 32);

/// Login sessions and distinct user names among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Users {
    /// `USER_PROCESS` records.
    pub sessions: u32,
    /// Distinct `ut_user` values among them.
    pub unique: u32,
}

/// Counts the sessions in the bytes of a utmp file. A trailing partial record (the file being
/// written while read) is ignored. Never allocates: uniqueness is checked against the earlier
/// records, which stays cheap for the handful of sessions a node has.
pub fn count(bytes: &[u8]) -> Users {
    let mut u = Users::default();
    let records = || bytes.chunks_exact(RECORD).filter(|r| is_session(r));
    for (i, r) in records().enumerate() {
        u.sessions += 1;
        let name = user(r);
        if !records().take(i).any(|earlier| user(earlier) == name) {
            u.unique += 1;
        }
    }
    u
}

fn is_session(r: &[u8]) -> bool {
    i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS
}

/// `ut_user` up to its first NUL.
fn user(r: &[u8]) -> &[u8] {
    let field = &r[USER.0..USER.0 + USER.1];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[..2].copy_from_slice(&kind.to_ne_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn counts_user_processes_and_distinct_names() {
        // utmp(5): BOOT_TIME = 2, LOGIN_PROCESS = 6, USER_PROCESS = 7, DEAD_PROCESS = 8.
        let mut f = Vec::new();
        for (k, u) in [
            (2, "reboot"),
            (7, "pi"),
            (6, "LOGIN"),
            (7, "root"),
            (7, "pi"),
            (8, ""),
        ] {
            f.extend(record(k, u));
        }
        f.extend([7, 0, 0]); // a record being written
        assert_eq!(
            count(&f),
            Users {
                sessions: 3,
                unique: 2
            }
        );
        assert_eq!(count(&[]), Users::default());
    }
}
