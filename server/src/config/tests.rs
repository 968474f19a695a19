use super::*;

#[test]
fn the_readme_configuration_example_is_accepted_as_written() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("### Configuration").expect("section")..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("end")];
    let c = ServerConfig::from_toml(block).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.uncommitted_ttl, Duration::from_secs(604_800));
    assert_eq!(c.sweep_interval, Duration::from_secs(3600));
    assert!(matches!(c.meta, super::MetaConfig::Redb));
}

#[test]
fn defaults_hold_without_a_file() {
    let c = ServerConfig::load(None, None, None).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        c.store,
        StoreKind::Local {
            path: PathBuf::from("quire-data/store"),
            sync: quire_storage::LocalSync::Batched,
            writes: quire_storage::LocalWrites::Direct,
        }
    );
    assert!(c.dev_bootstrap);
}

/// A local store's two-way settings: the default when absent, the other when named; a value
/// that is neither, or the other one for a store that is not local, is refused by name.
#[test]
fn a_local_store_chooses_how_it_syncs_and_writes() {
    let local = |text: &str| match ServerConfig::from_toml(text).unwrap().store {
        StoreKind::Local { sync, writes, .. } => (sync, writes),
        other => panic!("{other:?}"),
    };
    use quire_storage::{LocalSync, LocalWrites};
    assert_eq!(
        local("[store]\n"),
        (LocalSync::Batched, LocalWrites::Direct)
    );
    assert_eq!(
        local("[store]\nsync = \"each\"\nwrites = \"cached\"\n"),
        (LocalSync::Each, LocalWrites::Cached)
    );
    for (field, wrong, other, why) in [
        ("sync", "never", "each", "is not \"batched\" or \"each\""),
        (
            "writes",
            "mmap",
            "cached",
            "is not \"direct\" or \"cached\"",
        ),
    ] {
        for (text, why) in [
            (format!("[store]\n{field} = \"{wrong}\"\n"), why),
            (
                format!("[store]\nkind = \"memory\"\n{field} = \"{other}\"\n"),
                "only a local store",
            ),
        ] {
            let e = ServerConfig::from_toml(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("store.{field}")) && e.contains(why),
                "{e}"
            );
        }
    }
}

#[test]
fn development_credentials_only_for_the_quickstart_unless_asked_for() {
    let anywhere = Some("0.0.0.0:4433".parse().unwrap());
    assert!(
        !ServerConfig::load(None, anywhere, None)
            .unwrap()
            .dev_bootstrap
    );
    assert!(!ServerConfig::from_toml("").unwrap().dev_bootstrap);
    let asked = ServerConfig::from_toml("[dev]\nbootstrap = true\n").unwrap();
    assert!(asked.dev_bootstrap);
}

#[test]
fn every_key_overrides() {
    let c = ServerConfig::from_toml(
        r#"
        listen = "127.0.0.1:9000"
        data_dir = "/srv/q"
        [store]
        kind = "local"
        path = "/srv/objects"
        [pipeline]
        chunk_size = 65536
        max_page_size = 1000
        [dev]
        bootstrap = false
        tenant = "acme"
        "#,
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.data_dir, PathBuf::from("/srv/q"));
    assert_eq!(c.pipeline.chunk_size, 65536);
    assert_eq!(c.pipeline.max_page_size, 1000);
    assert!(!c.dev_bootstrap);
    assert_eq!(c.dev_tenant, "acme");
}

#[test]
fn tenants_stay_in_their_region() {
    let ok = ServerConfig::from_toml(
        "[store]\nregion = \"eu\"\n[stores.us]\nkind = \"local\"\npath = \"/us\"\nregion = \"us\"\n\
         [tenants.acme]\nstore = \"us\"\nregion = \"us\"\n[tenants.dev]\nregion = \"eu\"\n",
    )
    .unwrap();
    assert_eq!(ok.routes.len(), 1);
    for (text, key) in [
        ("[stores.us]\npath = \"/us\"\nregion = \"us\"\n[tenants.acme]\nstore = \"us\"\nregion = \"eu\"\n", "tenants.acme.store"),
        ("[tenants.acme]\nregion = \"eu\"\n", "tenants.acme.store"),
        ("[stores.us]\npath = \"/us\"\n", "stores.us.residency"),
        ("[tenants.acme]\nstore = \"mars\"\nregion = \"eu\"\n", "tenants.acme.store"),
    ] {
        let e = ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text:?}: {e}");
    }
}

#[test]
fn replicas_keep_the_tenants_residency() {
    let stores = "[store]\nresidency = \"eu\"\n\
         [stores.eu2]\nkind = \"local\"\npath = \"/eu2\"\nresidency = \"eu\"\n\
         [stores.eu3]\nkind = \"local\"\npath = \"/eu3\"\nresidency = \"eu\"\n\
         [stores.us]\nkind = \"local\"\npath = \"/us\"\nresidency = \"us\"\n";
    let ok = ServerConfig::from_toml(&format!(
        "{stores}[tenants.acme]\nresidency = \"eu\"\nreplicas = [\"eu2\", \"eu3\"]\n\
         [tenants.solo]\nresidency = \"eu\"\n[spool]\nack = \"replicated\"\n"
    ))
    .unwrap();
    assert_eq!(ok.replicas.len(), 1);
    assert_eq!(
        (ok.replicas[0].0.as_str(), ok.replicas[0].1.len()),
        ("acme", 2)
    );
    assert_eq!(ok.pipeline.ack, AckMode::Replicated);
    for (tenant, why) in [
        ("replicas = [\"eu2\"]\n", "must state its residency"),
        (
            "residency = \"eu\"\nreplicas = [\"us\"]\n",
            "replica us keeps data in us",
        ),
        (
            "residency = \"eu\"\nreplicas = [\"mars\"]\n",
            "no [stores.mars] section",
        ),
        (
            "residency = \"eu\"\nreplicas = [\"eu2\", \"eu2\"]\n",
            "listed twice",
        ),
        (
            "residency = \"eu\"\nstore = \"eu2\"\nreplicas = [\"eu2\"]\n",
            "the tenant's own store",
        ),
    ] {
        let text = format!("{stores}[tenants.acme]\n{tenant}");
        let e = ServerConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            e.contains("tenants.acme.") && e.contains(why),
            "{text:?}: {e}"
        );
    }
    let backups =
        ServerConfig::from_toml(&format!("{stores}[backup]\nreplicas = [\"eu2\"]\n")).unwrap();
    assert_eq!(backups.replicas[0].0, crate::backup::BACKUP_KEY_OWNER);
    let e = ServerConfig::from_toml(&format!("{stores}[backup]\nreplicas = [\"us\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backup.replicas") && e.contains("the backups must stay in eu"),
        "{e}"
    );
    let e = ServerConfig::from_toml(
        "[stores.eu2]\nkind = \"local\"\npath = \"/eu2\"\nresidency = \"eu\"\n\
         [backup]\nreplicas = [\"eu2\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("store.residency"), "{e}");
    let e = ServerConfig::from_toml("[spool]\nack = \"everywhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"replicated\""), "{e}");
}

#[test]
fn a_memory_store_is_for_measurements() {
    let c = ServerConfig::from_toml("[store]\nkind = \"memory\"\n").unwrap();
    assert_eq!(c.store, StoreKind::Memory);
    let e = ServerConfig::from_toml("[store]\nkind = \"tape\"\n").unwrap_err();
    assert!(e.to_string().contains("memory for measurements"), "{e}");
}

#[test]
fn a_stores_api_region_is_not_its_residency() {
    // S3 in eu-central-1, which tenants know as "eu": the residency is its own key. (The test
    // above is the configuration of earlier versions, where `region` was read as both.)
    let c = ServerConfig::from_toml(
        "[store]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"eu-central-1\"\n\
         residency = \"eu\"\nbucket = \"b\"\naccess_key_id = \"i\"\nsecret_access_key = \"s\"\n\
         [tenants.acme]\nresidency = \"eu\"\n",
    )
    .unwrap();
    match c.store {
        StoreKind::S3(o) => assert_eq!(o.region, "eu-central-1"),
        other => panic!("{other:?}"),
    }
    let e = ServerConfig::from_toml(
        "[store]\nresidency = \"eu\"\n[tenants.acme]\nresidency = \"us\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("must stay in us") && e.contains("residency is eu"),
        "{e}"
    );
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("listen = \"nowhere\"", "listen"),
        (
            "[tenants.acme]\ntimestamp_url = \"ftp://tsa\"",
            "tenants.acme.timestamp_url",
        ),
        ("[pipeline]\nchunk_size = 12", "pipeline.chunk_size"),
        ("[store]\nkind = \"floppy\"", "store.kind"),
        ("[tls]\ncert = \"a.pem\"", "tls.key"),
        ("[tls]\nca = \"ca.pem\"", "tls.ca"),
        ("lisen = \"127.0.0.1:1\"", "lisen"),
        ("[pipeline]\nchunk_sise = 65536", "chunk_sise"),
    ];
    for (text, key) in cases {
        let e = ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text:?} gave {e:?}");
    }
}

#[test]
fn store_secrets_come_from_a_private_file_or_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("s3.secret");
    std::fs::write(&secret_file, "from-the-file\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s3 = |secret_line: &str| {
        ServerConfig::from_toml(&format!(
            "[store]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"eu-central-1\"\nbucket = \"b\"\naccess_key_id = \"id\"\n{secret_line}\n"
        ))
    };
    let secret_of = |c: ServerConfig| match c.store {
        StoreKind::S3(o) => o.secret_access_key,
        other => panic!("{other:?}"),
    };
    let path = secret_file.display();
    let c = s3(&format!("secret_access_key_file = \"{path}\"")).unwrap();
    assert_eq!(secret_of(c), "from-the-file");

    std::env::set_var("QUIRE_TEST_CONFIG_SECRET_7", "from-the-environment");
    let c = s3("secret_access_key_env = \"QUIRE_TEST_CONFIG_SECRET_7\"").unwrap();
    assert_eq!(secret_of(c), "from-the-environment");

    let error = |line: &str| s3(line).unwrap_err().to_string();
    let e = error("secret_access_key_env = \"QUIRE_TEST_CONFIG_UNSET_7\"");
    assert!(
        e.contains("store.secret_access_key_env") && e.contains("not set"),
        "{e}"
    );
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = error(&format!("secret_access_key_file = \"{path}\""));
    assert!(
        e.contains("store.secret_access_key_file") && e.contains("chmod 600"),
        "{e}"
    );
    let e = error(&format!(
        "secret_access_key = \"inline\"\nsecret_access_key_file = \"{path}\""
    ));
    assert!(e.contains("not several"), "{e}");
    let e = error("");
    assert!(
        e.contains("store.secret_access_key") && e.contains("_file"),
        "{e}"
    );
}

#[test]
fn backups_are_scheduled_for_the_embedded_store_only() {
    let c = ServerConfig::from_toml("[backup]\nevery = \"6h\"\nkeep = 3\n").unwrap();
    assert_eq!(c.backup.every, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(c.backup.keep, 3);
    assert_eq!(ServerConfig::from_toml("").unwrap().backup.every, None);
    let e = ServerConfig::from_toml("[backup]\nevery = \"soon\"\n").unwrap_err();
    assert!(e.to_string().contains("backup.every"), "{e}");
    let pg =
        "[meta]\nkind = \"postgres\"\nurl = \"host=/tmp dbname=q\"\n[backup]\nevery = \"1d\"\n";
    let e = ServerConfig::from_toml(pg).unwrap_err().to_string();
    assert!(e.contains("backup.every") && e.contains("pg_dump"), "{e}");
}
