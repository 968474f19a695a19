//! The KMS and HSM backends against real servers: moto's KMS API and SoftHSM2, which
//! `scripts/test-servers.sh` starts and points at with `QUIRE_TEST_KMS_ENDPOINT`,
//! `SOFTHSM2_CONF` and `QUIRE_TEST_PKCS11_MODULE`. Tests use tenant names of their own, so
//! tests running at once never share a key. (One token per test process: SoftHSM2 reads its
//! token list once per process, so a token made after the first open would not be seen.)

use std::path::PathBuf;
use std::sync::Arc;

use quire_codecs::sealed::SecretKey;
use quire_vault::{
    AwsKms, AwsKmsOptions, BackendError, KeyBackend, KeyName, KeyVault, Keyring, Pkcs11,
    Pkcs11Options, VaultError,
};
use zeroize::Zeroizing;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts the KMS and HSM they need")
    })
}

fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}-{}", hex::encode(b))
}

/// This test process's SoftHSM2 token, made on first use.
fn hsm() -> Pkcs11Options {
    static TOKEN: std::sync::OnceLock<Pkcs11Options> = std::sync::OnceLock::new();
    TOKEN.get_or_init(new_token).clone()
}

fn new_token() -> Pkcs11Options {
    let label = unique("t");
    let pin = "24681357".to_string();
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--so-pin", "13572468", "--pin", &pin])
        .output()
        .expect("softhsm2-util runs (scripts/test-servers.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Pkcs11Options {
        module: PathBuf::from(required_env("QUIRE_TEST_PKCS11_MODULE")),
        token_label: label,
        pin: Zeroizing::new(pin),
    }
}

fn kms() -> AwsKms {
    AwsKms::new(AwsKmsOptions {
        endpoint: required_env("QUIRE_TEST_KMS_ENDPOINT"),
        region: "eu-central-1".into(),
        access_key_id: "quire-test".into(),
        secret_access_key: Zeroizing::new("quire-test-secret".into()),
        session_token: None,
    })
    .unwrap()
}

/// What every backend must do: wrap and unwrap bound to tenant and version, refuse a
/// wrapped key under another name, and refuse everything of a tenant after its shred.
fn contract(backend: &dyn KeyBackend, tenant: &str) {
    backend.probe().unwrap();
    let v1 = KeyName { tenant, version: 1 };
    let v2 = KeyName { tenant, version: 2 };
    backend.prepare(v1).unwrap();
    backend.prepare(v1).unwrap(); // twice: still one key
    backend.prepare(v2).unwrap();
    let key = SecretKey::generate();
    let w1 = backend.wrap(v1, &key).unwrap();
    let w2 = backend.wrap(v2, &key).unwrap();
    assert!(
        !w1.windows(32).any(|w| w == key.expose()),
        "the key went out in clear"
    );
    assert_eq!(backend.unwrap(v1, &w1).unwrap().expose(), key.expose());
    assert_eq!(backend.unwrap(v2, &w2).unwrap().expose(), key.expose());
    assert!(
        backend.unwrap(v2, &w1).is_err(),
        "opened under another version"
    );
    let mut damaged = w1.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(backend.unwrap(v1, &damaged).is_err());

    backend.shred(tenant).unwrap();
    for (name, w) in [(v1, &w1), (v2, &w2)] {
        match backend.unwrap(name, w) {
            Err(BackendError::Disabled(_)) => {}
            other => panic!("after the shred, unwrap gave {other:?}"),
        }
    }
    backend.shred(tenant).unwrap(); // again: nothing left, no error
}

#[test]
fn pkcs11_keeps_the_contract() {
    let backend = Pkcs11::open(&hsm()).unwrap();
    contract(&backend, &unique("acme"));
}

#[test]
fn aws_kms_keeps_the_contract() {
    contract(&kms(), &unique("acme"));
}

#[test]
fn pkcs11_wrapping_is_bound_to_the_tenant() {
    let backend = Pkcs11::open(&hsm()).unwrap();
    let (ta, tb) = (unique("a"), unique("b"));
    let a = KeyName {
        tenant: &ta,
        version: 1,
    };
    backend.prepare(a).unwrap();
    let w = backend.wrap(a, &SecretKey::generate()).unwrap();
    // Another tenant's name has no key in the token at all.
    let b = KeyName {
        tenant: &tb,
        version: 1,
    };
    assert!(matches!(
        backend.unwrap(b, &w),
        Err(BackendError::Disabled(_))
    ));
    backend.prepare(b).unwrap();
    assert!(backend.unwrap(b, &w).is_err());
}

#[test]
fn pkcs11_retiring_a_version_destroys_only_its_key() {
    let backend = Pkcs11::open(&hsm()).unwrap();
    let key = SecretKey::generate();
    let tenant = unique("acme");
    let names = [1, 2].map(|version| KeyName {
        tenant: &tenant,
        version,
    });
    let wrapped: Vec<_> = names
        .iter()
        .map(|n| {
            backend.prepare(*n).unwrap();
            backend.wrap(*n, &key).unwrap()
        })
        .collect();
    backend.retire(names[0]).unwrap();
    assert!(matches!(
        backend.unwrap(names[0], &wrapped[0]),
        Err(BackendError::Disabled(_))
    ));
    backend.unwrap(names[1], &wrapped[1]).unwrap();
}

/// (A wrong PIN is tested through `quire serve --check` in `tests/custody.rs`: PKCS#11 login
/// state is shared by every session of a process, so it cannot be tried here beside tests
/// that are logged in.)
#[test]
fn a_missing_token_is_refused_with_what_to_fix() {
    let mut options = hsm();
    options.token_label = "no-such-token".into();
    let e = Pkcs11::open(&options).unwrap_err();
    assert!(e.to_string().contains("no token labelled"), "{e}");
}

#[test]
fn aws_kms_makes_one_key_per_tenant_even_when_two_nodes_race() {
    let tenant = unique("race");
    let nodes: Vec<_> = (0..2).map(|_| Arc::new(kms())).collect();
    let name = KeyName {
        tenant: &tenant,
        version: 1,
    };
    let wrapped: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let tenant = tenant.clone();
                s.spawn(move || {
                    let name = KeyName {
                        tenant: &tenant,
                        version: 1,
                    };
                    n.prepare(name).unwrap();
                    n.wrap(name, &SecretKey::from_bytes([5; 32])).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Whichever node wrapped it, either node opens it: they use the same KMS key.
    for w in &wrapped {
        for n in &nodes {
            assert_eq!(n.unwrap(name, w).unwrap().expose(), &[5; 32]);
        }
    }
}

#[test]
fn an_unreachable_kms_is_named_as_such() {
    let backend = AwsKms::new(AwsKmsOptions {
        endpoint: "http://127.0.0.1:9".into(),
        region: "eu-central-1".into(),
        access_key_id: "quire-test".into(),
        secret_access_key: Zeroizing::new("x".into()),
        session_token: None,
    })
    .unwrap();
    let e = backend.probe().unwrap_err();
    assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("reachable"), "{e}");
}

/// The keyring over an HSM: keys survive a restart, a copy of the vault directory opens
/// nothing once the tenant is shredded, and the vault directory holds no key in clear.
#[test]
fn a_keyring_over_an_hsm_outlives_restarts_and_not_a_shred() {
    let options = hsm();
    let dir = tempfile::tempdir().unwrap();
    let ring = Keyring::open(dir.path(), Box::new(Pkcs11::open(&options).unwrap())).unwrap();
    let (acme, beta) = (unique("acme"), unique("beta"));
    let (r, k) = ring.current_kek(&acme).unwrap();
    ring.current_kek(&beta).unwrap();
    drop(ring);
    let copy = std::fs::read(dir.path().join(format!("{acme}.kek"))).unwrap();
    assert!(!copy
        .windows(64)
        .any(|w| w == hex::encode(k.expose()).as_bytes()));

    let ring = Keyring::open(dir.path(), Box::new(Pkcs11::open(&options).unwrap())).unwrap();
    assert_eq!(ring.kek(&r).unwrap().expose(), k.expose());
    ring.shred(&acme).unwrap();
    assert!(matches!(ring.kek(&r), Err(VaultError::Shredded(_))));
    drop(ring);

    // Someone restores the keyring file from a backup and removes the mark: still nothing.
    std::fs::write(dir.path().join(format!("{acme}.kek")), &copy).unwrap();
    std::fs::remove_file(dir.path().join(format!("{acme}.shredded"))).unwrap();
    let e = Keyring::open(dir.path(), Box::new(Pkcs11::open(&options).unwrap())).unwrap_err();
    assert!(
        matches!(
            e,
            VaultError::Backend {
                source: BackendError::Disabled(_),
                ..
            }
        ),
        "{e}"
    );
}

/// A KMS that fails for a moment (here: a proxy in front of the test's KMS that drops the first
/// two connections) costs a retry, not a refused page.
#[test]
fn aws_kms_calls_survive_a_moment_of_unreachability() {
    let upstream = required_env("QUIRE_TEST_KMS_ENDPOINT");
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            if n < 2 {
                drop(client); // the moment of unreachability
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
            std::thread::spawn(move || {
                let (mut from_server, mut to_client) = (server, client);
                std::io::copy(&mut from_server, &mut to_client)
            });
        }
    });
    let backend = AwsKms::new(AwsKmsOptions {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "eu-central-1".into(),
        access_key_id: "quire-test".into(),
        secret_access_key: Zeroizing::new("quire-test-secret".into()),
        session_token: None,
    })
    .unwrap();
    backend.probe().unwrap();
}
