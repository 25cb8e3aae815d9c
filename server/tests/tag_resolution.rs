//! The mailbox processor's first step, `tag_resolution::resolve`: every kind
//! of tag a meeting body can carry, and each rejection named precisely.

use std::collections::BTreeMap;

use vmr_protocol::tag::tok_tag_lines;
use vmr_server::config::{IntegrationConfig, ServerConfig};
use vmr_server::integration::Integration;
use vmr_server::meeting_tag::{TagCheckError, TagKey};
use vmr_server::tag_resolution::{resolve, ResolvedTag, TagRejection};
use vmr_server::templates::TemplateSet;
use vmr_server::token::TokenValidator;
use vmr_simulator::exchange::IdentityClaims;

const UUID: &str = "00112233445566778899aabbccddeeff";

struct Fixture {
    sim: vmr_simulator::RunningSimulator,
    integration: Integration,
    validator: TokenValidator,
    server: ServerConfig,
}

async fn fixture(key: u8) -> Fixture {
    let sim = vmr_simulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        vmr_simulator::DEFAULT_TENANT,
    )
    .await
    .expect("simulator");
    let mut config = IntegrationConfig::default();
    config.auth.exchange_metadata = vec![sim.local_addr.to_string()];
    let server = ServerConfig::default();
    let integration = Integration::new(
        config,
        TemplateSet::compile(&BTreeMap::new()).expect("templates"),
        &server,
        TagKey::new(vec![key; 32]),
        0,
    );
    let cert = reqwest::Certificate::from_pem(sim.tls.cert_pem().as_bytes()).expect("pem");
    let http = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .expect("client");
    Fixture {
        sim,
        integration,
        validator: TokenValidator::new(http),
        server,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn intact_pxps_resolves_to_its_alias() {
    let f = fixture(1).await;
    let tag = f.integration.tag_key.issue(UUID).to_tag();
    let body = format!("<html><body><div>Join</div><div>{tag}</div></body></html>");
    match resolve(&body, true, &f.integration, &f.validator, now()).await {
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
    let result = resolve(&edited, false, &f.integration, &f.validator, now()).await;
    match result {
        Err(TagRejection::NotOurs(TagCheckError::Tampered)) => {}
        other => panic!("{other:?}"),
    }
    let message = resolve(&edited, false, &f.integration, &f.validator, now())
        .await
        .expect_err("rejected")
        .to_string();
    assert!(message.contains("edited"), "{message}");
}

#[tokio::test]
async fn pxps_from_another_deployment_is_named_as_foreign() {
    let f = fixture(1).await;
    let other = TagKey::new(vec![2; 32]);
    let tag = other.issue(UUID).to_tag();
    let err = resolve(&tag, false, &f.integration, &f.validator, now())
        .await
        .expect_err("foreign");
    assert!(
        matches!(err, TagRejection::NotOurs(TagCheckError::ForeignKey { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("another deployment"), "{err}");
}

#[tokio::test]
async fn wrapped_tok_validates_to_the_organizer() {
    let f = fixture(1).await;
    let aud = f.integration.config.pane_url(&f.server);
    let token = f
        .sim
        .simulator
        .exchange
        .identity_token(&IdentityClaims::new(aud, "ann@example.com".to_string()));
    let body = format!(
        "<div>placeholder</div><div>{}</div>",
        tok_tag_lines(&token).join("<br>")
    );
    match resolve(&body, true, &f.integration, &f.validator, now()).await {
        Ok(ResolvedTag::Deferred { identity, token: t }) => {
            assert_eq!(t, token);
            assert_eq!(identity.email.as_deref(), Some("ann@example.com"));
        }
        other => panic!("{other:?}"),
    }
    // The same body a day later: the token has expired.
    let err = resolve(&body, true, &f.integration, &f.validator, now() + 86_400)
        .await
        .expect_err("expired");
    match err {
        TagRejection::InvalidToken(e) => assert_eq!(e.code(), "token_expired"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_and_malformed_tags_are_rejected() {
    let f = fixture(1).await;
    let err = resolve("<p>no tag</p>", true, &f.integration, &f.validator, now())
        .await
        .expect_err("none");
    assert!(matches!(err, TagRejection::NoTag));
    let err = resolve("PXPS:-0a1b", false, &f.integration, &f.validator, now())
        .await
        .expect_err("cut off");
    assert!(matches!(err, TagRejection::Malformed(_)), "{err:?}");
}
