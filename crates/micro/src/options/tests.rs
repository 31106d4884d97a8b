use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::error::ErrorKind;

use super::*;

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(extension: &str, text: &str) -> TempFile {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "micro-options-test-{}-{n}.{extension}",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |var| map.get(var).cloned()
}

fn load(
    code: &PartialOptions,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<ServiceOptions, OptionsError> {
    let mut argv = vec!["svc"];
    argv.extend_from_slice(args);
    ServiceOptions::load_with_env(Command::new("svc"), code, argv, &env_of(env))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn options_defaults_are_built_in() {
    let opts = load(&PartialOptions::default(), &[], &[]).expect("load");
    assert_eq!(opts, ServiceOptions::default());
    assert_eq!(opts.server_version, "latest");
    assert_eq!(opts.server_address, "0.0.0.0:0");
    assert_eq!(opts.server_drain_timeout, secs(10));
    assert_eq!(opts.server_max_body, 4_194_304);
    assert_eq!(opts.register_ttl, secs(90));
    assert_eq!(opts.register_interval, secs(30));
    assert_eq!(opts.registry, crate::registry::DEFAULT);
    assert_eq!(opts.selector, "random");
    assert_eq!(opts.client_retries, 1);
    assert_eq!(opts.client_request_timeout, secs(5));
    assert_eq!(opts.client_pool_size, 100);
    assert_eq!(opts.client_dial_timeout, secs(5));
    assert!(opts.server_id.is_none() && opts.proxy.is_none() && opts.broker.is_none());
}

#[test]
fn options_each_layer_wins_over_the_next() {
    let file = TempFile::new(
        "yaml",
        "micro:\n  register_ttl: 3s\n  selector: from-file\n",
    );
    let code = PartialOptions {
        register_ttl: Some(secs(4)),
        selector: Some("from-code".into()),
        ..PartialOptions::default()
    };
    let flag = ["--register_ttl", "1s", "--config_file", file.path()];
    let env = [("MICRO_REGISTER_TTL", "2s")];

    // flag > env > file > code > built-in
    assert_eq!(
        load(&code, &flag, &env).expect("flag").register_ttl,
        secs(1)
    );
    let env_and_file = [
        ("MICRO_REGISTER_TTL", "2s"),
        ("MICRO_CONFIG_FILE", file.path()),
    ];
    assert_eq!(
        load(&code, &[], &env_and_file).expect("env").register_ttl,
        secs(2)
    );
    let only_file = [("MICRO_CONFIG_FILE", file.path())];
    let opts = load(&code, &[], &only_file).expect("file");
    assert_eq!(opts.register_ttl, secs(3));
    assert_eq!(opts.selector, "from-file");
    assert_eq!(opts.config_file.as_deref(), Some(file.0.as_path()));
    assert_eq!(load(&code, &[], &[]).expect("code").register_ttl, secs(4));
    assert_eq!(
        load(&PartialOptions::default(), &[], &[])
            .expect("built-in")
            .register_ttl,
        secs(90)
    );
    // Options a layer does not set fall through to the next.
    let opts = load(&code, &flag, &env).expect("mixed");
    assert_eq!(opts.selector, "from-file");
    assert_eq!(opts.register_interval, secs(30));
}

#[test]
fn options_config_file_named_in_code() {
    let file = TempFile::new("json", r#"{"micro": {"registry": "etcd"}}"#);
    let code = PartialOptions {
        config_file: Some(file.0.clone()),
        registry: Some("mdns".into()),
        ..PartialOptions::default()
    };
    assert_eq!(load(&code, &[], &[]).expect("load").registry, "etcd");
}

#[test]
fn options_every_option_from_env() {
    let env = [
        ("MICRO_SERVER_NAME", "greeter"),
        ("MICRO_SERVER_VERSION", "1.2.0"),
        ("MICRO_SERVER_ID", "greeter-1"),
        ("MICRO_SERVER_ADDRESS", ":8080"),
        ("MICRO_SERVER_ADVERTISE", "10.0.0.5:8080"),
        ("MICRO_SERVER_METADATA", "region=eu, tier=gold"),
        ("MICRO_SERVER_DRAIN_TIMEOUT", "2.5"),
        ("MICRO_SERVER_MAX_BODY", "512KiB"),
        ("MICRO_REGISTER_TTL", "1m"),
        ("MICRO_REGISTER_INTERVAL", "20"),
        ("MICRO_REGISTRY", "etcd"),
        ("MICRO_REGISTRY_ADDRESS", "10.0.0.1:2379,10.0.0.2:2379"),
        ("MICRO_BROKER", "nats"),
        ("MICRO_BROKER_ADDRESS", "nats://a:4222"),
        ("MICRO_SELECTOR", "roundrobin"),
        ("MICRO_CLIENT_RETRIES", "3"),
        ("MICRO_CLIENT_REQUEST_TIMEOUT", "750ms"),
        ("MICRO_CLIENT_POOL_SIZE", "7"),
        ("MICRO_CLIENT_DIAL_TIMEOUT", "2s"),
        ("MICRO_WRAPPERS", "logging, tracing"),
        ("MICRO_PROXY", ":8081"),
        ("MICRO_CONFIG", "etcd"),
        ("MICRO_CONFIG_ADDRESS", "10.0.0.1:2379, 10.0.0.2:2379"),
    ];
    let o = load(&PartialOptions::default(), &[], &env).expect("load");
    assert_eq!(o.server_name, "greeter");
    assert_eq!(o.server_version, "1.2.0");
    assert_eq!(o.server_id.as_deref(), Some("greeter-1"));
    assert_eq!(o.server_address, "0.0.0.0:8080");
    assert_eq!(o.server_advertise.as_deref(), Some("10.0.0.5:8080"));
    assert_eq!(o.server_metadata.get("region"), Some("eu"));
    assert_eq!(o.server_metadata.get("tier"), Some("gold"));
    assert_eq!(o.server_drain_timeout, Duration::from_millis(2500));
    assert_eq!(o.server_max_body, 512 * 1024);
    assert_eq!(o.register_ttl, secs(60));
    assert_eq!(o.register_interval, secs(20));
    assert_eq!(o.registry, "etcd");
    assert_eq!(o.registry_address, ["10.0.0.1:2379", "10.0.0.2:2379"]);
    assert_eq!(o.broker.as_deref(), Some("nats"));
    assert_eq!(o.broker_address, ["nats://a:4222"]);
    assert_eq!(o.selector, "roundrobin");
    assert_eq!(o.client_retries, 3);
    assert_eq!(o.client_request_timeout, Duration::from_millis(750));
    assert_eq!(o.client_pool_size, 7);
    assert_eq!(o.client_dial_timeout, secs(2));
    assert_eq!(o.wrappers, ["logging", "tracing"]);
    assert_eq!(o.proxy.as_deref(), Some("127.0.0.1:8081"));
    assert_eq!(o.config.as_deref(), Some("etcd"));
    assert_eq!(o.config_address, ["10.0.0.1:2379", "10.0.0.2:2379"]);
}

#[test]
fn options_every_option_from_flags() {
    let args = [
        "--server_name=greeter",
        "--server_version=2",
        "--server_id=g-1",
        "--server_address=:9090",
        "--server_advertise=host:1",
        "--server_metadata=a=1,b=2",
        "--server_metadata=b=3",
        "--server_drain_timeout=1m",
        "--server_max_body=1MB",
        "--register_ttl=10",
        "--register_interval=5s",
        "--registry=etcd",
        "--registry_address=x:1,y:2",
        "--registry_address=z:3",
        "--broker=nats",
        "--broker_address=n:1",
        "--selector=roundrobin",
        "--client_retries=0",
        "--client_request_timeout=1s",
        "--client_pool_size=5",
        "--client_dial_timeout=100ms",
        "--wrappers=auth",
        "--proxy=proxy:8081",
        "--config=ETCD",
        "--config_address=e:1,e:2",
    ];
    let o = load(&PartialOptions::default(), &args, &[]).expect("load");
    assert_eq!(o.server_name, "greeter");
    assert_eq!(o.server_version, "2");
    assert_eq!(o.server_id.as_deref(), Some("g-1"));
    assert_eq!(o.server_address, "0.0.0.0:9090");
    assert_eq!(o.server_advertise.as_deref(), Some("host:1"));
    assert_eq!(o.server_metadata.get("a"), Some("1"));
    assert_eq!(o.server_metadata.get("b"), Some("3"));
    assert_eq!(o.server_drain_timeout, secs(60));
    assert_eq!(o.server_max_body, 1_000_000);
    assert_eq!(o.register_ttl, secs(10));
    assert_eq!(o.register_interval, secs(5));
    assert_eq!(o.registry, "etcd");
    assert_eq!(o.registry_address, ["x:1", "y:2", "z:3"]);
    assert_eq!(o.broker.as_deref(), Some("nats"));
    assert_eq!(o.broker_address, ["n:1"]);
    assert_eq!(o.selector, "roundrobin");
    assert_eq!(o.client_retries, 0);
    assert_eq!(o.client_request_timeout, secs(1));
    assert_eq!(o.client_pool_size, 5);
    assert_eq!(o.client_dial_timeout, Duration::from_millis(100));
    assert_eq!(o.wrappers, ["auth"]);
    assert_eq!(o.proxy.as_deref(), Some("proxy:8081"));
    assert_eq!(o.config.as_deref(), Some("etcd"));
    assert_eq!(o.config_address, ["e:1", "e:2"]);
}

#[test]
fn options_config_store_is_checked_in_every_layer() {
    let err = load(
        &PartialOptions::default(),
        &[],
        &[("MICRO_CONFIG", "consul")],
    )
    .expect_err("env");
    assert_eq!(
        err.to_string(),
        r#"MICRO_CONFIG="consul": expected a config store: etcd or service"#
    );
    let err = load(&PartialOptions::default(), &["--config", "zk"], &[]).expect_err("flag");
    assert!(err.to_string().contains("etcd or service"), "{err}");
    let file = TempFile::new(
        "yaml",
        "micro:\n  config: etcd\n  config_address: [a:1, b:2]\n",
    );
    let o = load(
        &PartialOptions::default(),
        &["--config_file", file.path()],
        &[],
    )
    .expect("file");
    assert_eq!(o.config.as_deref(), Some("etcd"));
    assert_eq!(o.config_address, ["a:1", "b:2"]);
    assert_eq!(ServiceOptions::default().config, None);
}

#[test]
fn options_address_short_form_from_every_layer() {
    let code = PartialOptions {
        server_address: Some(":7000".into()),
        ..PartialOptions::default()
    };
    assert_eq!(
        load(&code, &[], &[]).expect("code").server_address,
        "0.0.0.0:7000"
    );
    let file = TempFile::new("toml", "[micro]\nserver_address = \":7001\"\n");
    let opts = load(&code, &["--config_file", file.path()], &[]).expect("file");
    assert_eq!(opts.server_address, "0.0.0.0:7001");
    let env = [("MICRO_SERVER_ADDRESS", ":7002")];
    assert_eq!(
        load(&code, &[], &env).expect("env").server_address,
        "0.0.0.0:7002"
    );
    let flag = ["--server_address", ":7003"];
    assert_eq!(
        load(&code, &flag, &env).expect("flag").server_address,
        "0.0.0.0:7003"
    );
    let opts = load(&code, &["--server_address", "127.0.0.1:9090"], &[]).expect("full");
    assert_eq!(opts.server_address, "127.0.0.1:9090");
}

const YAML: &str = "\
micro:
  server_address: 127.0.0.1:9090
  register_ttl: 30s
  register_interval: 10
  server_max_body: 1MiB
  server_metadata: { region: eu, weight: 5 }
  registry_address: [a:1, b:2]
  wrappers: logging,auth
  client_retries: 4
  proxy: null
greeter:
  greeting: Hi
";

const JSON: &str = r#"{
  "micro": {
    "server_address": "127.0.0.1:9090",
    "register_ttl": "30s",
    "register_interval": 10,
    "server_max_body": "1MiB",
    "server_metadata": "region=eu,weight=5",
    "registry_address": ["a:1", "b:2"],
    "wrappers": ["logging", "auth"],
    "client_retries": 4
  },
  "greeter": {"greeting": "Hi"}
}"#;

const TOML: &str = r#"
[micro]
server_address = "127.0.0.1:9090"
register_ttl = "30s"
register_interval = 10
server_max_body = 1048576
server_metadata = { region = "eu", weight = 5 }
registry_address = ["a:1", "b:2"]
wrappers = "logging, auth"
client_retries = 4

[greeter]
greeting = "Hi"
"#;

fn check_file_options(o: &PartialOptions) {
    assert_eq!(o.server_address.as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(o.register_ttl, Some(secs(30)));
    assert_eq!(o.register_interval, Some(secs(10)));
    assert_eq!(o.server_max_body, Some(1 << 20));
    let md = o.server_metadata.as_ref().expect("metadata");
    assert_eq!(
        (md.get("region"), md.get("weight")),
        (Some("eu"), Some("5"))
    );
    assert_eq!(
        o.registry_address.as_deref(),
        Some(&["a:1".to_string(), "b:2".into()][..])
    );
    assert_eq!(
        o.wrappers.as_deref(),
        Some(&["logging".to_string(), "auth".into()][..])
    );
    assert_eq!(o.client_retries, Some(4));
    assert_eq!(o.proxy, None);
    assert_eq!(o.selector, None);
}

#[test]
fn options_file_formats() {
    for (extension, text) in [
        ("yaml", YAML),
        ("yml", YAML),
        ("json", JSON),
        ("toml", TOML),
    ] {
        let file = TempFile::new(extension, text);
        let opts =
            PartialOptions::from_file(&file.0).unwrap_or_else(|e| panic!("{extension}: {e}"));
        check_file_options(&opts);
    }
    // Unknown extensions: JSON, then YAML, then TOML.
    for text in [YAML, JSON, TOML] {
        let file = TempFile::new("conf", text);
        let opts = PartialOptions::from_file(&file.0).unwrap_or_else(|e| panic!("{e}"));
        check_file_options(&opts);
    }
}

#[test]
fn options_file_without_micro_table_sets_nothing() {
    for (extension, text) in [
        ("yaml", "greeter:\n  greeting: Hi\n"),
        ("json", "{}"),
        ("toml", ""),
        ("yaml", "micro:\n"),
    ] {
        let file = TempFile::new(extension, text);
        let opts = PartialOptions::from_file(&file.0).expect("empty");
        assert_eq!(opts, PartialOptions::default());
    }
}

#[test]
fn options_file_errors_name_the_file() {
    // Unknown key: names key and file.
    let file = TempFile::new("yaml", "micro:\n  server_adress: :1\n");
    let err = PartialOptions::from_file(&file.0).expect_err("unknown key");
    assert!(matches!(&err, OptionsError::UnknownKey { key, .. } if key == "server_adress"));
    let msg = err.to_string();
    assert!(
        msg.contains(file.path()) && msg.contains("micro.server_adress"),
        "{msg}"
    );
    assert!(msg.contains("did you mean \"server_address\""), "{msg}");

    let file = TempFile::new("json", r#"{"micro": {"colour": "blue"}}"#);
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("far")
        .to_string();
    assert!(msg.contains("the options are: server_name, "), "{msg}");
    assert!(!msg.contains("config_file"), "{msg}");

    let file = TempFile::new("json", r#"{"micro": {"register-ttl": 5}}"#);
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("dash")
        .to_string();
    assert!(msg.contains("did you mean \"register_ttl\""), "{msg}");

    // Malformed files: name the file and the line.
    for (extension, text, line) in [
        ("json", "{\n  \"micro\": {\n    \"registry\": \n}", "line 4"),
        ("yaml", "micro:\n  registry: [a\n  selector: b\n", "line"),
        ("toml", "[micro]\nregistry = \n", "line 2"),
    ] {
        let file = TempFile::new(extension, text);
        let err = PartialOptions::from_file(&file.0).expect_err(extension);
        assert!(
            matches!(err, OptionsError::File { .. }),
            "{extension}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(file.path()), "{msg}");
        assert!(msg.contains(line), "{extension}: {msg}");
    }

    // Bad values: name file, key and what is expected.
    let file = TempFile::new("toml", "[micro]\nregister_ttl = \"abc\"\n");
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("value")
        .to_string();
    assert!(msg.contains(file.path()), "{msg}");
    assert!(
        msg.contains(r#"micro.register_ttl = "abc": expected a duration"#),
        "{msg}"
    );

    let file = TempFile::new("json", r#"{"micro": {"client_retries": -1}}"#);
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("count")
        .to_string();
    assert!(
        msg.contains("micro.client_retries = -1: expected a whole number"),
        "{msg}"
    );

    let file = TempFile::new("json", r#"{"micro": {"selector": {"a": 1}}}"#);
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("table")
        .to_string();
    assert!(msg.contains("micro.selector"), "{msg}");

    let file = TempFile::new("yaml", "micro:\n  config_file: other.yaml\n");
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("config_file")
        .to_string();
    assert!(msg.contains("config_file can only be given"), "{msg}");

    for (extension, text) in [("yaml", "micro: 5\n"), ("yaml", "- a\n- b\n")] {
        let file = TempFile::new(extension, text);
        let msg = PartialOptions::from_file(&file.0)
            .expect_err(text)
            .to_string();
        assert!(msg.contains(file.path()), "{msg}");
    }

    let file = TempFile::new("conf", "{{ not anything ]]\n= =\n");
    let msg = PartialOptions::from_file(&file.0)
        .expect_err("guess")
        .to_string();
    assert!(msg.contains("not valid JSON, YAML or TOML"), "{msg}");

    let missing = std::env::temp_dir().join("micro-options-test-missing.yaml");
    let err = load(
        &PartialOptions::default(),
        &["--config_file", missing.to_str().expect("utf-8")],
        &[],
    )
    .expect_err("missing");
    assert!(
        err.to_string().contains("micro-options-test-missing.yaml"),
        "{err}"
    );
}

#[test]
fn options_bad_values_name_their_source() {
    let err = load(
        &PartialOptions::default(),
        &[],
        &[("MICRO_REGISTER_TTL", "abc")],
    )
    .expect_err("env");
    assert_eq!(
        err.to_string(),
        r#"MICRO_REGISTER_TTL="abc": expected a duration like 30, 30s, 500ms or 1m"#
    );
    for (var, value, expected) in [
        ("MICRO_SERVER_ADDRESS", "8080", "expected host:port"),
        ("MICRO_SERVER_METADATA", "novalue", "key=value"),
        ("MICRO_SERVER_MAX_BODY", "big", "expected a size"),
        ("MICRO_CLIENT_RETRIES", "three", "expected a whole number"),
        ("MICRO_PROXY", "proxy", "expected host:port"),
    ] {
        let err = load(&PartialOptions::default(), &[], &[(var, value)]).expect_err(var);
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{var}={value:?}: ")), "{msg}");
        assert!(msg.contains(expected), "{msg}");
    }

    // Flags are checked by clap, whose error names the flag and is a clap error.
    let err = load(&PartialOptions::default(), &["--register_ttl", "abc"], &[]).expect_err("flag");
    let clap_err = err.as_clap().expect("clap error");
    assert_eq!(clap_err.kind(), ErrorKind::ValueValidation);
    let msg = clap_err.to_string();
    assert!(
        msg.contains("--register_ttl") && msg.contains("expected a duration"),
        "{msg}"
    );

    let err = load(&PartialOptions::default(), &["--no_such_flag"], &[]).expect_err("unknown");
    assert_eq!(
        err.as_clap().map(clap::Error::kind),
        Some(ErrorKind::UnknownArgument)
    );
}

#[test]
fn options_empty_env_counts_as_unset() {
    let code = PartialOptions {
        registry: Some("etcd".into()),
        ..PartialOptions::default()
    };
    let env = [("MICRO_REGISTRY", ""), ("MICRO_REGISTER_TTL", "  ")];
    let opts = load(&code, &[], &env).expect("load");
    assert_eq!(opts.registry, "etcd");
    assert_eq!(opts.register_ttl, secs(90));
}

/// Options with no flag: a password on a command line is visible to every user of
/// the machine, so it comes from the environment or the config file only.
const NO_FLAG: &[&str] = &["registry_password"];

/// The variable `--help` names for an option: wrapper settings have one per key.
fn documented_env(key: &str) -> String {
    match key {
        "wrapper" => "MICRO_WRAPPER_<NAME>_<KEY>".into(),
        _ => env_var(key),
    }
}

#[test]
fn options_help_lists_every_option_with_env_and_default() {
    let err = load(&PartialOptions::default(), &["--help"], &[]).expect_err("help");
    let clap_err = err.as_clap().expect("clap error");
    assert_eq!(clap_err.kind(), ErrorKind::DisplayHelp);
    let help = clap_err.to_string();

    let defaults = PartialOptions::from(ServiceOptions::default());
    for key in KEYS {
        if NO_FLAG.contains(key) {
            assert!(!help.contains(&format!("--{key} ")), "--{key}:\n{help}");
            assert!(help.contains(&env_var(key)), "{key} is not named:\n{help}");
            continue;
        }
        assert!(
            help.contains(&format!("--{key} ")),
            "--{key} missing:\n{help}"
        );
        assert!(
            help.contains(&format!("[env: {}]", documented_env(key))),
            "{key}:\n{help}"
        );
        if let Some(default) = defaults.display(key) {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "default {default} of {key} missing:\n{help}"
            );
        }
    }
    // Every flag is an option with its matching variable.
    let command = ServiceArgs::augment_args(Command::new("svc"));
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        assert!(KEYS.contains(&id), "flag {id} is not in KEYS");
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        assert!(
            help.contains(&format!("[env: {}]", documented_env(id))),
            "{id}: {help}"
        );
    }
    assert_eq!(command.get_arguments().count(), KEYS.len() - NO_FLAG.len());
}

#[test]
fn options_help_shows_code_defaults() {
    let code = PartialOptions {
        server_name: Some("greeter".into()),
        register_ttl: Some(secs(45)),
        ..PartialOptions::default()
    };
    let command = Command::new("greeter").about("Says hello");
    let err = ServiceOptions::load_with_env(command, &code, ["greeter", "--help"], &|_| None)
        .expect_err("help");
    let help = err.to_string();
    assert!(help.contains("Says hello"), "{help}");
    assert!(
        help.contains("[env: MICRO_REGISTER_TTL] [default: 45s]"),
        "{help}"
    );
    assert!(!help.contains("[default: 1m30s]"), "{help}");
    assert!(
        help.contains("[env: MICRO_SERVER_NAME] [default: greeter]"),
        "{help}"
    );
}

#[test]
fn options_help_via_process_env_loader() {
    // `load` reads the process environment, which `--help` never reaches.
    let err = ServiceOptions::load(
        Command::new("svc"),
        &PartialOptions::default(),
        ["svc", "-h"],
    )
    .expect_err("help");
    assert_eq!(
        err.as_clap().map(clap::Error::kind),
        Some(ErrorKind::DisplayHelp)
    );
}

#[test]
fn options_metadata_from_every_layer() {
    let env = [("MICRO_SERVER_METADATA", "a=env")];
    let opts = load(
        &PartialOptions::default(),
        &["--server_metadata", "a=1,b=2"],
        &env,
    )
    .expect("flag");
    assert_eq!(opts.server_metadata.get("a"), Some("1"));
    assert_eq!(opts.server_metadata.get("b"), Some("2"));
    let opts = load(&PartialOptions::default(), &[], &env).expect("env");
    assert_eq!(opts.server_metadata.get("a"), Some("env"));
    let file = TempFile::new("yaml", "micro:\n  server_metadata: [\"x=1\", \"y=2\"]\n");
    let opts = load(
        &PartialOptions::default(),
        &["--config_file", file.path()],
        &[],
    )
    .expect("file");
    assert_eq!(opts.server_metadata.get("y"), Some("2"));
    let err = load(
        &PartialOptions::default(),
        &["--server_metadata", "novalue"],
        &[],
    )
    .expect_err("bad flag");
    assert!(err.to_string().contains("key=value"), "{err}");
}

#[test]
fn options_layers_and_round_trip() {
    let resolved = ServiceOptions {
        server_name: "greeter".into(),
        proxy: Some("p:1".into()),
        ..ServiceOptions::default()
    };
    let partial = PartialOptions::from(resolved.clone());
    assert_eq!(partial.clone().resolve(), resolved);
    assert_eq!(PartialOptions::default().or(partial.clone()), partial);
    // Flattened groups give the same layer as the full set.
    let args = ServiceArgs {
        client: ClientArgs {
            client_retries: Some(9),
            ..ClientArgs::default()
        },
        registry: RegistryArgs {
            registry_address: vec![String::new()],
            ..RegistryArgs::default()
        },
        ..ServiceArgs::default()
    };
    let flags = args.to_partial();
    assert_eq!(flags.client_retries, Some(9));
    // An explicitly empty list clears lower layers.
    assert_eq!(flags.registry_address, Some(vec![]));
    let code = PartialOptions {
        registry_address: Some(vec!["a:1".into()]),
        ..PartialOptions::default()
    };
    let opts = ServiceOptions::from_layers(flags, &code, &|_| None).expect("layers");
    assert!(opts.registry_address.is_empty());
}

#[test]
fn options_registry_tls_and_credentials() {
    let env = [
        ("MICRO_REGISTRY_TLS_CA", "/etc/etcd/ca.pem"),
        ("MICRO_REGISTRY_TLS_CERT", "/etc/etcd/client.pem"),
        ("MICRO_REGISTRY_TLS_KEY", "/etc/etcd/client-key.pem"),
        ("MICRO_REGISTRY_USERNAME", "micro"),
        ("MICRO_REGISTRY_PASSWORD", " pass word "),
    ];
    let o = load(&PartialOptions::default(), &[], &env).expect("env");
    assert_eq!(
        o.registry_tls_ca.as_deref(),
        Some(std::path::Path::new("/etc/etcd/ca.pem"))
    );
    assert_eq!(
        o.registry_tls_cert.as_deref(),
        Some(std::path::Path::new("/etc/etcd/client.pem"))
    );
    assert_eq!(
        o.registry_tls_key.as_deref(),
        Some(std::path::Path::new("/etc/etcd/client-key.pem"))
    );
    assert_eq!(o.registry_username.as_deref(), Some("micro"));
    // A password is taken as given, spaces and all, and never shown.
    assert_eq!(
        o.registry_password.as_ref().map(Secret::expose),
        Some(" pass word ")
    );
    assert!(!format!("{o:?}").contains("pass word"), "{o:?}");

    // Flags win over the environment; there is no password flag.
    let flags = [
        "--registry_tls_ca=ca2.pem",
        "--registry_tls_cert=c2.pem",
        "--registry_tls_key=k2.pem",
        "--registry_username=admin",
    ];
    let o = load(&PartialOptions::default(), &flags, &env).expect("flags");
    assert_eq!(
        o.registry_tls_ca.as_deref(),
        Some(std::path::Path::new("ca2.pem"))
    );
    assert_eq!(o.registry_username.as_deref(), Some("admin"));
    assert_eq!(
        o.registry_password.as_ref().map(Secret::expose),
        Some(" pass word ")
    );
    let err = load(&PartialOptions::default(), &["--registry_password=x"], &[])
        .expect_err("no password flag");
    assert!(err.as_clap().is_some(), "{err}");

    // And the config file.
    let file = TempFile::new(
        "yaml",
        "micro:\n  registry: etcd\n  registry_tls_ca: /ca.pem\n  registry_username: u\n  registry_password: s3cret\n",
    );
    let o = load(
        &PartialOptions::default(),
        &["--config_file", file.path()],
        &[],
    )
    .expect("file");
    assert_eq!(
        o.registry_tls_ca.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    assert_eq!(o.registry_username.as_deref(), Some("u"));
    assert_eq!(
        o.registry_password.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    // A bad password value in a file is reported without showing it.
    let file = TempFile::new("yaml", "micro:\n  registry_password: {a: s3cret}\n");
    let err = load(
        &PartialOptions::default(),
        &["--config_file", file.path()],
        &[],
    )
    .expect_err("a table is no password");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("registry_password"), "{err}");
}
