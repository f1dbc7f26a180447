//! Names the mount and the CLI agree to *create*, on top of atlas's own rule
//! ([`crate::store::validate_name`]: non-empty, no `/`, not `.`/`..`, no leading `_`).
//!
//! The 0.10 format allows any other character in a name (paths percent-encode
//! them), and stores holding such names stay readable. But a new name with a
//! control character (`"a\nb"`, `"\x01"`) breaks `ls`, shell scripts and log lines,
//! and a file name over 255 bytes (`NAME_MAX`) is one that most tools, tar and
//! other filesystems cannot hold, so both are refused when something is created
//! (mkdir, create, rename target, `atlasfs put`), never when it is read.

use super::error::FsError;

/// Longest file or directory name created, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Checks a new directory or file name as the user sees it (`<array>.npy` for
/// arrays): `EINVAL` for control characters, `ENAMETOOLONG` beyond [`NAME_MAX`].
pub fn check_new_name(name: &str) -> Result<(), FsError> {
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(FsError::inval(format!("invalid name {name:?}: control characters (here {c:?}) are not accepted in new dataset or array names")));
    }
    if name.len() > NAME_MAX {
        return Err(FsError::new(
            libc::ENAMETOOLONG,
            format!("name of {} bytes is too long: new names are limited to {NAME_MAX} bytes ({}…)", name.len(), name.chars().take(32).collect::<String>()),
        ));
    }
    // An array is a directory of the store named by its percent-encoded name (`%`
    // and non-ASCII bytes take 3 bytes each): a local store cannot hold a longer
    // segment, and the flush would fail deep down with EIO.
    if let Some(array) = name.strip_suffix(".npy") {
        let stored = object_store::path::PathPart::from(array);
        if stored.as_ref().len() > NAME_MAX {
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                format!(
                    "array name {}… is too long as stored: {} bytes percent-encoded (`%` and non-ASCII bytes take 3), over {NAME_MAX}",
                    array.chars().take(32).collect::<String>(),
                    stored.as_ref().len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names() {
        for ok in ["temperature", "a b", "été", "t[K]", "x.npy", &"a".repeat(255), &"é".repeat(127)] {
            check_new_name(ok).unwrap();
        }
        for (bad, errno) in [("a\nb", libc::EINVAL), ("\x01", libc::EINVAL), ("tab\there", libc::EINVAL), ("del\x7f", libc::EINVAL), ("\u{85}", libc::EINVAL)] {
            assert_eq!(check_new_name(bad).unwrap_err().errno, errno, "{bad:?}");
        }
        let long = "a".repeat(256);
        let e = check_new_name(&long).unwrap_err();
        assert_eq!(e.errno, libc::ENAMETOOLONG);
        assert!(e.msg.contains("256 bytes"), "{}", e.msg);
        assert_eq!(check_new_name(&"é".repeat(128)).unwrap_err().errno, libc::ENAMETOOLONG);
        // Arrays are stored percent-encoded: 85 '%' are 255 bytes there, 86 are 258.
        check_new_name(&format!("{}.npy", "%".repeat(85))).unwrap();
        check_new_name(&"%".repeat(200)).unwrap(); // a dataset: a key in the metadata file, not a path
        let e = check_new_name(&format!("{}.npy", "%".repeat(86))).unwrap_err();
        assert_eq!(e.errno, libc::ENAMETOOLONG);
        assert!(e.msg.contains("258 bytes percent-encoded"), "{}", e.msg);
    }
}
