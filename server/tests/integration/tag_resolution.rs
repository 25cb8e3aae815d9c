//! The mailbox processor's first step, `tag_resolution::resolve`: every kind
//! of tag a meeting body can carry, and each rejection named precisely.
//! TOKs are deferral statements minted by an edge; they are accepted once,
//! for the organizer (or a delegate), within their lifetime.

use std::collections::BTreeMap;

use vmr_auth::Identity;
use vmr_core::config::{IntegrationConfig, ManagementConfig, ServerConfig};
use vmr_core::deferral::{DeferralError, DeferralKeys};
use vmr_core::meeting_tag::{TagCheckError, TagKey};
use vmr_core::secret::Secret;
use vmr_core::templates::TemplateSet;
use vmr_protocol::tag::tok_tag_lines;
use vmr_protocol::AuthMethod;
use vmr_server::integration::Integration;
use vmr_server::tag_resolution::{resolve, MeetingFacts, ResolvedTag, TagRejection};
use vmr_store::Storage;

const UUID: &str = "00112233445566778899aabbccddeeff";
const NOW: i64 = 1_800_000_000;
const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

struct Fixture {
    integration: Integration,
    keys: DeferralKeys,
    storage: Storage,
    _dir: tempfile::TempDir,
}

async fn fixture(key: u8) -> Fixture {
    let config = IntegrationConfig::default();
    let server = ServerConfig::default();
    let integration = Integration::new(
        config,
        TemplateSet::compile(&BTreeMap::new()).expect("templates"),
        &server,
        TagKey::new(vec![key; 32]),
        0,
    );
    let management = ManagementConfig {
        deferral_key: Some(Secret::new(KEY)),
        ..ManagementConfig::default()
    };
    let keys = DeferralKeys::from_config(&management)
        .expect("keys")
        .expect("configured");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let storage = Storage::open(&url, 2).await.expect("storage");
    Fixture {
        integration,
        keys,
        storage,
        _dir: dir,
    }
}

fn ann() -> Identity {
    Identity {
        user_id: "ann-uid@https://mail.example.test/autodiscover/metadata/json/1".into(),
        email: Some("ann@example.com".into()),
        display_name: Some("Ann".into()),
        method: AuthMethod::ExchangeUserIdToken,
        expires_at: NOW + 600,
    }
}

fn meeting<'a>(uid: &'a str, organizer: &'a str, delegates: &'a [String]) -> MeetingFacts<'a> {
    MeetingFacts {
        uid,
        organizer_email: organizer,
        delegates,
    }
}

impl Fixture {
    async fn resolve(
        &self,
        body: &str,
        html: bool,
        facts: MeetingFacts<'_>,
        now: i64,
    ) -> Result<ResolvedTag, TagRejection> {
        resolve(
            body,
            html,
            &self.integration,
            Some(&self.keys),
            &self.storage,
            facts,
            now,
        )
        .await
    }

    /// A meeting body with placeholder + the TOK an edge minted for `who`.
    fn tok_body(&self, who: &Identity, integration: &str) -> String {
        let statement = self.keys.statement(integration, who, None, NOW);
        let tok = self.keys.mint(&statement);
        format!(
            "<div>placeholder</div><div>{}</div>",
            tok_tag_lines(&tok).join("<br>")
        )
    }
}

#[tokio::test]
async fn intact_pxps_resolves_to_its_alias() {
    let f = fixture(1).await;
    let tag = f.integration.tag_key.issue(UUID).to_tag();
    let body = format!("<html><body><div>Join</div><div>{tag}</div></body></html>");
    match f
        .resolve(&body, true, meeting("m1", "ann@example.com", &[]), NOW)
        .await
    {
        Ok(ResolvedTag::Alias(id)) => assert_eq!(id.alias_uuid, UUID),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tampered_pxps_is_named_as_edited() {
    let f = fixture(1).await;
    let tag = f.integration.tag_key.issue(UUID).to_tag();
    // One digit of the alias uuid changed by hand.
    let edited = tag.replacen("0011", "0012", 1);
    let err = f
        .resolve(&edited, false, meeting("m1", "ann@example.com", &[]), NOW)
        .await
        .expect_err("rejected");
    assert!(
        matches!(err, TagRejection::NotOurs(TagCheckError::Tampered)),
        "{err:?}"
    );
    assert!(err.to_string().contains("edited"), "{err}");
}

#[tokio::test]
async fn pxps_from_another_deployment_is_named_as_foreign() {
    let f = fixture(1).await;
    let tag = TagKey::new(vec![2; 32]).issue(UUID).to_tag();
    let err = f
        .resolve(&tag, false, meeting("m1", "ann@example.com", &[]), NOW)
        .await
        .expect_err("foreign");
    assert!(
        matches!(err, TagRejection::NotOurs(TagCheckError::ForeignKey { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("another deployment"), "{err}");
}

#[tokio::test]
async fn wrapped_tok_resolves_to_the_organizer_once_per_meeting() {
    let f = fixture(1).await;
    let body = f.tok_body(&ann(), "default");
    let facts = meeting("meeting-1", "ANN@example.com", &[]);
    match f.resolve(&body, true, facts, NOW + 60).await {
        Ok(ResolvedTag::Deferred(st)) => {
            assert_eq!(st.email.as_deref(), Some("ann@example.com"));
            assert_eq!(st.user_id, ann().user_id);
        }
        other => panic!("{other:?}"),
    }
    // The same meeting processed again (after a crash): still accepted.
    assert!(matches!(
        f.resolve(&body, true, facts, NOW + 120).await,
        Ok(ResolvedTag::Deferred(_))
    ));
    // The TOK copied into another meeting of the same organizer: replayed.
    let err = f
        .resolve(
            &body,
            true,
            meeting("meeting-2", "ann@example.com", &[]),
            NOW + 180,
        )
        .await
        .expect_err("replayed");
    assert!(matches!(err, TagRejection::Replayed), "{err:?}");
}

#[tokio::test]
async fn tok_from_a_delegate_is_accepted_and_from_anyone_else_refused() {
    let f = fixture(1).await;
    let body = f.tok_body(&ann(), "default");
    let delegates = vec!["ann@example.com".to_string()];
    assert!(matches!(
        f.resolve(
            &body,
            true,
            meeting("m-boss", "boss@example.com", &delegates),
            NOW
        )
        .await,
        Ok(ResolvedTag::Deferred(_))
    ));
    let body = f.tok_body(&ann(), "default");
    let err = f
        .resolve(&body, true, meeting("m-other", "bob@example.com", &[]), NOW)
        .await
        .expect_err("not the organizer");
    assert!(matches!(err, TagRejection::NotOrganizer { .. }), "{err:?}");
    assert!(err.to_string().contains("bob@example.com"), "{err}");
}

#[tokio::test]
async fn expired_edited_foreign_and_raw_toks_are_refused() {
    let f = fixture(1).await;
    let facts = meeting("m1", "ann@example.com", &[]);
    let body = f.tok_body(&ann(), "default");
    // Eight days later the 7-day statement has expired.
    let err = f
        .resolve(&body, true, facts, NOW + 8 * 86_400)
        .await
        .expect_err("expired");
    assert!(
        matches!(
            err,
            TagRejection::InvalidDeferral(DeferralError::Expired { .. })
        ),
        "{err:?}"
    );
    // Issued for another integration.
    let body = f.tok_body(&ann(), "other");
    let err = f.resolve(&body, true, facts, NOW).await.expect_err("other");
    assert!(matches!(err, TagRejection::OtherIntegration(_)), "{err:?}");
    // Edited: one character of the statement changed.
    let statement = f.keys.statement("default", &ann(), None, NOW);
    let tok = f.keys.mint(&statement);
    let mut chars: Vec<char> = tok.chars().collect();
    let i = tok.find('.').expect("dot") + 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let edited: String = chars.into_iter().collect();
    let err = f
        .resolve(&format!("TOK:-{edited}#"), false, facts, NOW)
        .await
        .expect_err("edited");
    assert!(
        matches!(
            err,
            TagRejection::InvalidDeferral(
                DeferralError::BadSignature | DeferralError::Malformed(_)
            )
        ),
        "{err:?}"
    );
    // A raw Outlook token (what older panes inserted) is not a statement.
    let raw = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl";
    let err = f
        .resolve(&format!("TOK:-{raw}#"), false, facts, NOW)
        .await
        .expect_err("raw token");
    assert!(
        matches!(
            err,
            TagRejection::InvalidDeferral(DeferralError::Malformed(_))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_and_malformed_tags_are_rejected() {
    let f = fixture(1).await;
    let facts = meeting("m1", "ann@example.com", &[]);
    let err = f
        .resolve("<p>no tag</p>", true, facts, NOW)
        .await
        .expect_err("none");
    assert!(matches!(err, TagRejection::NoTag));
    let err = f
        .resolve("PXPS:-0a1b", false, facts, NOW)
        .await
        .expect_err("cut off");
    assert!(matches!(err, TagRejection::Malformed(_)), "{err:?}");
}
