//! Issuing and checking `PXPS:-…#` meeting tags under an integration's key.
//!
//! The syntax lives in `vmr_protocol::tag` (shared with the pane); this module
//! adds the cryptography: a key id (so a tag from another deployment or
//! integration is named as such) and an HMAC-SHA-256 over key id + alias uuid
//! (so an edited tag is detected).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use vmr_protocol::tag::{PxpsId, KEY_ID_HEX, MAC_HEX};

type HmacSha256 = Hmac<Sha256>;

/// Why a PXPS tag is not ours or not intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagCheckError {
    #[error("the meeting tag was issued by another deployment or integration (key id {found}, ours is {ours})")]
    ForeignKey { found: String, ours: String },
    #[error("the meeting tag has been edited: its MAC does not match")]
    Tampered,
}

/// One integration's tag key.
#[derive(Clone)]
pub struct TagKey {
    key: Vec<u8>,
    key_id: String,
}

impl std::fmt::Debug for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TagKey {
    /// From the raw key bytes.
    pub fn new(key: Vec<u8>) -> TagKey {
        let digest = Sha256::new()
            .chain_update(b"vmr-scheduler tag key id\0")
            .chain_update(&key)
            .finalize();
        let key_id = hex::encode(&digest[..KEY_ID_HEX / 2]);
        TagKey { key, key_id }
    }

    /// This key's id as it appears in tags.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A MAC under this key over key id + alias uuid, not yet finalised.
    fn mac_over(&self, key_id: &str, alias_uuid: &str) -> HmacSha256 {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        mac.update(PxpsId::mac_input(key_id, alias_uuid).as_bytes());
        mac
    }

    /// The tag's MAC in hex: the first `MAC_HEX / 2` bytes of the HMAC.
    fn mac(&self, key_id: &str, alias_uuid: &str) -> String {
        let full = self.mac_over(key_id, alias_uuid).finalize().into_bytes();
        hex::encode(&full[..MAC_HEX / 2])
    }

    /// The tag for an alias uuid (32 hex digits).
    pub fn issue(&self, alias_uuid: &str) -> PxpsId {
        PxpsId {
            key_id: self.key_id.clone(),
            alias_uuid: alias_uuid.to_string(),
            mac: self.mac(&self.key_id, alias_uuid),
        }
    }

    /// Checks that `id` was issued under this key and not edited.
    pub fn verify(&self, id: &PxpsId) -> Result<(), TagCheckError> {
        if id.key_id != self.key_id {
            return Err(TagCheckError::ForeignKey {
                found: id.key_id.clone(),
                ours: self.key_id.clone(),
            });
        }
        // The MAC is compared in constant time by `hmac` itself, and only at
        // its full (truncated) length.
        let same = match hex::decode(&id.mac) {
            Ok(given) if given.len() == MAC_HEX / 2 => self
                .mac_over(&id.key_id, &id.alias_uuid)
                .verify_truncated_left(&given)
                .is_ok(),
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(TagCheckError::Tampered)
        }
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac::new_from_slice only fails for fixed-size-key MACs, never HMAC.
    panic!("HMAC rejected a key, which HMAC never does")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmr_protocol::tag::{find_tag, MeetingTag};

    #[test]
    fn issued_tags_verify_and_edits_are_named() {
        let key = TagKey::new(vec![7; 32]);
        let uuid = "00112233445566778899aabbccddeeff";
        let id = key.issue(uuid);
        let body = format!("<p>Join</p><p>{}</p>", id.to_tag());
        let Some(Ok(MeetingTag::Pxps(found))) = find_tag(&body, true) else {
            panic!("tag not found in {body}");
        };
        assert_eq!(key.verify(&found), Ok(()));

        let mut edited = found.clone();
        edited.alias_uuid.replace_range(0..1, "f");
        assert_eq!(key.verify(&edited), Err(TagCheckError::Tampered));

        let other = TagKey::new(vec![8; 32]);
        let foreign = other.issue(uuid);
        assert!(matches!(
            key.verify(&foreign),
            Err(TagCheckError::ForeignKey { .. })
        ));
    }
}
