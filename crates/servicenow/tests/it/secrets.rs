//! Secrets never reach Debug or Display output.

use nowpilot_servicenow::{Credentials, GrantCredentials, ReadOptions, ResolvedConfig};
use secrecy::SecretString;

use crate::fake::*;

#[tokio::test]
async fn no_secret_in_any_formatted_output() {
    let fake = Fake::start(|r| {
        if r.is_token_call() {
            Reply::token("access-token-value", Some("refresh-token-value"), 1800)
        } else {
            Reply::envelope(
                403,
                "Operation Failed",
                Some("Data Policy Exception: mandatory: Resolution code"),
            )
        }
    })
    .await;
    let credentials = Credentials::OAuth {
        client_id: "client-id".into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        grant: GrantCredentials::Password {
            username: "u".into(),
            password: SecretString::from(PASSWORD),
        },
    };
    let config = ResolvedConfig::new(fake.instance(), credentials.clone());
    let client = fake.oauth(GrantCredentials::Password {
        username: "u".into(),
        password: SecretString::from(PASSWORD),
    });
    let error = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(error.is_data_policy());
    let refresh = client.current_refresh_token().unwrap();
    let outputs = [
        format!("{credentials:?}"),
        format!("{config:?}"),
        format!("{client:?}"),
        format!("{error}"),
        format!("{error:?}"),
        format!("{refresh:?}"),
        format!("{:?}", fake.instance()),
    ];
    for output in &outputs {
        for secret in [
            PASSWORD,
            CLIENT_SECRET,
            "access-token-value",
            "refresh-token-value",
        ] {
            assert!(!output.contains(secret), "{secret} leaked in {output}");
        }
    }
}
