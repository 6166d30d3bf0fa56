//! `deploy/k8s`: the manifests for a sharded run on Kubernetes decode as their Kubernetes
//! types and fit together: the coordinator's `--shards` equals the worker Job's completions
//! and parallelism, workers dial the coordinator's Service on the port that reaches its
//! `--listen` port, the Service selects the coordinator pod and nothing else, the scenario
//! the coordinator reads is the ConfigMap key mounted at that path and loads as an external
//! target inside the cluster, and so on.
//!
//! kubectl renders the manifests without a cluster: `--local` commands never contact an API
//! server, and `KUBECONFIG=/dev/null` makes sure there is none to contact. A missing kubectl
//! fails these tests; the `KUBECTL` environment variable names one that is not on `PATH`,
//! and `scripts/setup.sh --tests` builds one into the cache when the machine has none.
//!
//! Every check is broken on purpose once in `every_check_catches_the_break_it_is_for`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};
use stompede::scenario::{BodyFormat, Scenario, TargetKind};
use stompede::server::session::{SEND_PREFIX, SUBSCRIBE_PREFIX, WS_PATH};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");

const CONFIGMAP: &str = "stompede-scenario";
const SERVICE: &str = "stompede-coordinator";
const COORDINATOR_JOB: &str = "stompede-coordinator";
const WORKERS_JOB: &str = "stompede-workers";
/// The container in the coordinator pod that README.md tells `kubectl cp` to use.
const REPORTS_CONTAINER: &str = "reports";
/// README.md: about 20,000 users fit one worker with the workers' resources.
const MAX_USERS_PER_WORKER: u64 = 20_000;
/// Added by the typed round trip, removed before comparing.
const PROBE_ENV: &str = "STOMPEDE_SCHEMA_PROBE";

// ---------------------------------------------------------------------------------------
// kubectl
// ---------------------------------------------------------------------------------------

/// The kubectl to run: `$KUBECTL`, else the one `scripts/setup.sh --tests` built into the
/// cache (on a machine without a recent one), else `kubectl` on `PATH`.
fn kubectl_program() -> String {
    if let Ok(program) = std::env::var("KUBECTL") {
        return program;
    }
    let built = stompede::stack::cache_root().join("bin").join("kubectl");
    if built.is_file() {
        return built.display().to_string();
    }
    "kubectl".to_string()
}

/// Runs kubectl offline; panics (the test fails) when it is missing or exits non-zero.
fn kubectl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let program = kubectl_program();
    let mut child = Command::new(&program)
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): these tests need kubectl (on PATH, or named by \
                 the KUBECTL environment variable)"
            )
        });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write kubectl's stdin");
    }
    let out = child.wait_with_output().expect("wait for kubectl");
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The objects of kubectl's `-o json` output: one document per object, or a List.
fn objects(json_text: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in serde_json::Deserializer::from_slice(json_text).into_iter::<Value>() {
        let doc = doc.expect("kubectl printed JSON");
        match doc.get("items") {
            Some(Value::Array(items)) if doc["kind"] == "List" => out.extend(items.iter().cloned()),
            _ => out.push(doc),
        }
    }
    out
}

/// The objects as written (no Kubernetes types involved): `annotate --local` removing an
/// annotation nobody sets prints its input unchanged. `source` is `-k DIR` or `-f DIR`;
/// a kustomization is rendered by `kubectl kustomize` first (newer kubectls refuse `-k`
/// beside `annotate`'s own file options).
fn render(source: &[&str]) -> Vec<Value> {
    let annotate = |input: &[&str], stdin: Option<&[u8]>| {
        let mut args = vec!["annotate", "--local", "-o", "json"];
        args.extend_from_slice(input);
        args.push("stompede.check/unused-");
        objects(&kubectl(&args, stdin))
    };
    match source {
        ["-k", dir] => annotate(&["-f", "-"], Some(&kubectl(&["kustomize", dir], None))),
        _ => annotate(source, None),
    }
}

/// `kubectl apply -k deploy/k8s`'s objects, rendered once.
fn rendered() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| render(&["-k", DIR]))
}

// ---------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn find_mut<'a>(objs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    objs.iter_mut()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `name` (`--name value` or `--name=value`).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&prefix)
        }
    })
}

fn has_flag(args: &[String], name: &str) -> bool {
    let prefix = format!("{name}=");
    args.iter().any(|a| a == name || a.starts_with(&prefix))
}

fn containers(pod_spec: &Value) -> &[Value] {
    pod_spec["containers"].as_array().map_or(&[], Vec::as_slice)
}

/// The container whose first argument is `subcommand`.
fn container_running<'a>(pod_spec: &'a Value, subcommand: &str) -> Option<&'a Value> {
    containers(pod_spec)
        .iter()
        .find(|c| strings(&c["args"]).first().map(String::as_str) == Some(subcommand))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    match selector.as_object() {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// Drops nulls, empty objects and empty arrays, which typed encoding adds or leaves out
/// (`creationTimestamp: null`, `status: {}`, `emptyDir: {}`).
fn prune(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, x)| prune(x).map(|x| (k.clone(), x)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().map(|x| prune(x).unwrap_or(json!({}))).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other.clone()),
    }
}

/// Paths where `typed` differs from `written`.
fn diff(written: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (written, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, x) in a {
                match b.get(k) {
                    Some(y) => diff(x, y, &format!("{path}.{k}"), out),
                    None => out.push(format!(
                        "{path}.{k}: dropped by kubectl's typed decoding (misspelt, in the wrong \
                         place, or unknown to this kubectl's Kubernetes version)"
                    )),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added by typed decoding: {}", b[k]));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ if written == typed => {}
        _ => out.push(format!("{path}: written {written}, decodes as {typed}")),
    }
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// Every problem with how the objects fit together, as sentences; empty when they do.
fn problems(objs: &[Value]) -> Vec<String> {
    let mut p = Vec::new();
    let (Some(cm), Some(svc), Some(coord_job), Some(workers_job)) = (
        find(objs, "ConfigMap", CONFIGMAP),
        find(objs, "Service", SERVICE),
        find(objs, "Job", COORDINATOR_JOB),
        find(objs, "Job", WORKERS_JOB),
    ) else {
        let have: Vec<String> = objs
            .iter()
            .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
            .collect();
        return vec![format!(
            "expected ConfigMap {CONFIGMAP}, Service {SERVICE}, Job {COORDINATOR_JOB} and Job \
             {WORKERS_JOB}; rendered: {}",
            have.join(", ")
        )];
    };
    for (o, version) in [
        (cm, "v1"),
        (svc, "v1"),
        (coord_job, "batch/v1"),
        (workers_job, "batch/v1"),
    ] {
        if o["apiVersion"] != version {
            p.push(format!(
                "{} {}: apiVersion {} (want {version})",
                o["kind"], o["metadata"]["name"], o["apiVersion"]
            ));
        }
    }

    // The coordinator Job: one pod, never retried.
    let cspec = &coord_job["spec"];
    if int(&cspec["completions"]) != Some(1) || int(&cspec["parallelism"]) != Some(1) {
        p.push(format!(
            "coordinator Job: completions {} and parallelism {} must both be 1 (one run, one report)",
            cspec["completions"], cspec["parallelism"]
        ));
    }
    if int(&cspec["backoffLimit"]) != Some(0) {
        p.push(format!(
            "coordinator Job: backoffLimit {} must be 0 (a retried coordinator would start a run the workers have left)",
            cspec["backoffLimit"]
        ));
    }
    let cpod = &cspec["template"]["spec"];
    if cpod["restartPolicy"] != "Never" {
        p.push(format!(
            "coordinator pod: restartPolicy {} must be Never",
            cpod["restartPolicy"]
        ));
    }
    let Some(coord) = container_running(cpod, "coordinate") else {
        p.push("coordinator pod: no container runs `coordinate`".into());
        return p;
    };
    let cargs = strings(&coord["args"]);
    let shards = flag(&cargs, "--shards").and_then(|s| s.parse::<i64>().ok());
    let Some(shards) = shards.filter(|n| *n >= 1) else {
        p.push(format!(
            "coordinator: --shards is missing or not a positive number in {cargs:?}"
        ));
        return p;
    };
    let listen_port = match flag(&cargs, "--listen").and_then(|l| l.rsplit_once(':')) {
        Some((host, port)) => {
            if !matches!(host, "0.0.0.0" | "[::]" | "::") {
                p.push(format!(
                    "coordinator: --listen host {host} is not every interface (0.0.0.0): workers reach it through the pod IP"
                ));
            }
            port.parse::<i64>().ok()
        }
        None => None,
    };
    let Some(listen_port) = listen_port else {
        p.push(format!(
            "coordinator: --listen HOST:PORT is missing in {cargs:?}"
        ));
        return p;
    };
    if !containers(cpod).iter().any(|c| {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|port| int(&port["containerPort"]) == Some(listen_port))
    }) {
        p.push(format!(
            "coordinator pod: no containerPort {listen_port} (the --listen port)"
        ));
    }

    // The scenario: a ConfigMap key mounted where the coordinator reads it.
    let scenario_text = match cargs.get(1) {
        Some(path) if path.starts_with('/') => scenario_source(coord, cpod, cm, path, &mut p),
        other => {
            p.push(format!(
                "coordinator: the scenario path (first argument after `coordinate`) is {other:?}, \
                 not an absolute path"
            ));
            None
        }
    };
    if let Some(text) = scenario_text {
        check_scenario(&text, cargs[1].as_str(), shards, &mut p);
    }

    // The report directory: a volume the `reports` container mounts at the same path.
    match flag(&cargs, "--out") {
        None => p.push("coordinator: no --out (the report would land in the image's working directory, lost with the pod)".into()),
        Some(out) => {
            let volume = mount_volume(coord, out);
            match volume {
                None => p.push(format!(
                    "coordinator: --out {out} is not a mounted volume"
                )),
                Some(vol) => {
                    let keeper = containers(cpod)
                        .iter()
                        .find(|c| c["name"] == REPORTS_CONTAINER);
                    let shared = keeper.is_some_and(|k| {
                        k["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                            m["name"] == vol.as_str() && m["mountPath"] == out
                        })
                    });
                    if !shared {
                        p.push(format!(
                            "coordinator pod: container `{REPORTS_CONTAINER}` must mount volume {vol} at {out} (README: kubectl cp -c {REPORTS_CONTAINER})"
                        ));
                    }
                }
            }
        }
    }

    // The Service: selects the coordinator pod, not the workers, on the --listen port.
    let selector = &svc["spec"]["selector"];
    let clabels = &cspec["template"]["metadata"]["labels"];
    let wlabels = &workers_job["spec"]["template"]["metadata"]["labels"];
    if !labels_match(selector, clabels) {
        p.push(format!(
            "Service {SERVICE}: selector {selector} does not select the coordinator pod (labels {clabels})"
        ));
    }
    if labels_match(selector, wlabels) {
        p.push(format!(
            "Service {SERVICE}: selector {selector} also selects the worker pods (labels {wlabels})"
        ));
    }

    // The workers: an Indexed Job of `shards` pods at once.
    let wspec = &workers_job["spec"];
    if wspec["completionMode"] != "Indexed" {
        p.push(format!(
            "worker Job: completionMode {} must be Indexed (the index is the shard)",
            wspec["completionMode"]
        ));
    }
    for key in ["completions", "parallelism"] {
        if int(&wspec[key]) != Some(shards) {
            p.push(format!(
                "worker Job: {key} {} differs from the coordinator's --shards {shards}",
                wspec[key]
            ));
        }
    }
    if int(&wspec["backoffLimitPerIndex"]).is_none_or(|n| n < 0) {
        p.push(format!(
            "worker Job: backoffLimitPerIndex {} must be set (a failed pod is replaced with the same index)",
            wspec["backoffLimitPerIndex"]
        ));
    }
    if int(&wspec["maxFailedIndexes"]) != Some(0) {
        p.push(format!(
            "worker Job: maxFailedIndexes {} must be 0 (one failed shard fails the run, so the Job too)",
            wspec["maxFailedIndexes"]
        ));
    }
    let wpod = &wspec["template"]["spec"];
    if wpod["restartPolicy"] != "Never" {
        p.push(format!(
            "worker pod: restartPolicy {} must be Never (replacement pods keep their index; podFailurePolicy needs it)",
            wpod["restartPolicy"]
        ));
    }
    let names: BTreeSet<&str> = containers(wpod)
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for rule in wspec["podFailurePolicy"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(name) = rule["onExitCodes"]["containerName"].as_str() {
            if !names.contains(name) {
                p.push(format!(
                    "worker Job: podFailurePolicy names container {name}, the pod has {names:?}"
                ));
            }
        }
    }
    let Some(worker) = container_running(wpod, "worker") else {
        p.push("worker pod: no container runs `worker`".into());
        return p;
    };
    let wargs = strings(&worker["args"]);
    match flag(&wargs, "--coordinator").and_then(|c| c.rsplit_once(':')) {
        None => p.push(format!(
            "worker: --coordinator HOST:PORT is missing in {wargs:?}"
        )),
        Some((host, port)) => {
            if host != SERVICE && !host.starts_with(&format!("{SERVICE}.")) {
                p.push(format!(
                    "worker: --coordinator host {host} is not the Service {SERVICE}"
                ));
            }
            let port: Option<i64> = port.parse().ok();
            let svc_port = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|sp| int(&sp["port"]) == port);
            match svc_port {
                None => p.push(format!(
                    "worker: --coordinator port {port:?} is not a port of Service {SERVICE}"
                )),
                Some(sp) => {
                    let target = match &sp["targetPort"] {
                        Value::Null => int(&sp["port"]),
                        Value::String(name) => coord["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|cp| cp["name"] == name.as_str())
                            .and_then(|cp| int(&cp["containerPort"])),
                        n => int(n),
                    };
                    if target != Some(listen_port) {
                        p.push(format!(
                            "Service {SERVICE}: port {} has targetPort {} which reaches {target:?}, \
                             not the coordinator's --listen port {listen_port}",
                            sp["port"], sp["targetPort"]
                        ));
                    }
                    if !sp["protocol"].is_null() && sp["protocol"] != "TCP" {
                        p.push(format!(
                            "Service {SERVICE}: port {} protocol {} (shards talk TCP)",
                            sp["port"], sp["protocol"]
                        ));
                    }
                }
            }
        }
    }
    if has_flag(&wargs, "--shard") {
        p.push(format!(
            "worker: --shard in {wargs:?} gives every pod the same shard; leave it to JOB_COMPLETION_INDEX"
        ));
    }
    let env: Vec<&Value> = worker["env"].as_array().into_iter().flatten().collect();
    if env.iter().any(|e| e["name"] == "JOB_COMPLETION_INDEX") {
        p.push(
            "worker: env JOB_COMPLETION_INDEX is set by hand; Kubernetes sets it per pod".into(),
        );
    }
    let host_from = env
        .iter()
        .find(|e| e["name"] == "STOMPEDE_HOST")
        .map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]);
    if host_from.is_none_or(|f| *f != "spec.nodeName") {
        p.push(format!(
            "worker: STOMPEDE_HOST must come from the downward API's spec.nodeName (the node is the host whose clock latency is measured on); got {host_from:?}"
        ));
    }
    let res = &worker["resources"];
    for path in ["requests.cpu", "requests.memory", "limits.memory"] {
        let (a, b) = path.split_once('.').expect("dotted");
        if res[a][b].is_null() {
            p.push(format!("worker: resources.{path} is not set"));
        }
    }

    // The image's entrypoint is `stompede`; a command would replace it.
    for (what, c) in [("coordinator", coord), ("worker", worker)] {
        let command = strings(&c["command"]);
        if !command.is_empty() && command != ["stompede"] {
            p.push(format!(
                "{what}: command {command:?} replaces the image's entrypoint `stompede`"
            ));
        }
    }

    // One image everywhere: coordinator and workers speak the same shard protocol.
    let images: BTreeSet<String> = containers(cpod)
        .iter()
        .chain(containers(wpod))
        .map(|c| c["image"].to_string())
        .collect();
    if images.len() != 1 {
        p.push(format!(
            "containers run different images {images:?}; coordinator and workers must be one build"
        ));
    }
    p
}

/// The mounted volume's name whose mount path is `dir` or a parent of it.
fn mount_volume(container: &Value, dir: &str) -> Option<String> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mp| Path::new(dir).starts_with(mp))
        })
        .and_then(|m| m["name"].as_str().map(str::to_string))
}

/// The text of the ConfigMap key that appears at `path` inside `container`.
fn scenario_source(
    container: &Value,
    pod: &Value,
    cm: &Value,
    path: &str,
    p: &mut Vec<String>,
) -> Option<String> {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mp| Path::new(path).starts_with(mp))
        })
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len));
    let Some(mount) = mount else {
        p.push(format!(
            "coordinator: no volume is mounted at the scenario path {path}"
        ));
        return None;
    };
    if mount["readOnly"] != true {
        p.push(format!(
            "coordinator: the scenario mount {} is not readOnly",
            mount["mountPath"]
        ));
    }
    let mount_path = mount["mountPath"].as_str().unwrap_or_default();
    let rel = Path::new(path)
        .strip_prefix(mount_path)
        .expect("a prefix")
        .to_string_lossy()
        .into_owned();
    // With subPath, the mount is the file itself.
    let rel = match mount["subPath"].as_str() {
        Some(sub) if rel.is_empty() => sub.to_string(),
        Some(sub) => format!("{sub}/{rel}"),
        None => rel,
    };
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"]);
    let Some(source) = volume.map(|v| &v["configMap"]).filter(|c| !c.is_null()) else {
        p.push(format!(
            "coordinator pod: volume {} (mounted at {mount_path}) is not a ConfigMap volume",
            mount["name"]
        ));
        return None;
    };
    if source["name"] != cm["metadata"]["name"] {
        p.push(format!(
            "coordinator pod: the scenario volume uses ConfigMap {}, not {CONFIGMAP}",
            source["name"]
        ));
        return None;
    }
    let key = match source["items"].as_array() {
        None => Some(rel.clone()),
        Some(items) => items
            .iter()
            .find(|i| i["path"] == rel.as_str())
            .and_then(|i| i["key"].as_str().map(str::to_string)),
    };
    let text = key
        .as_deref()
        .and_then(|k| cm["data"][k].as_str())
        .map(str::to_string);
    if text.is_none() {
        p.push(format!(
            "ConfigMap {CONFIGMAP}: nothing of it appears at {path} (file {rel} in the volume, key {key:?}; the ConfigMap has keys {:?})",
            cm["data"].as_object().map(|d| d.keys().collect::<Vec<_>>()).unwrap_or_default()
        ));
    }
    text
}

/// The scenario loads, and its target is a chat server the pods can reach.
fn check_scenario(text: &str, path: &str, shards: i64, p: &mut Vec<String>) {
    let scenario = match Scenario::from_str(text, Path::new(path)) {
        Ok(s) => s,
        Err(e) => {
            p.push(format!(
                "ConfigMap {CONFIGMAP}: the scenario does not load: {e}"
            ));
            return;
        }
    };
    let users = u64::from(scenario.users.count);
    let shards = shards as u64;
    if users < shards {
        p.push(format!(
            "scenario: {users} users cannot be split over {shards} shards"
        ));
    } else if users.div_ceil(shards) > MAX_USERS_PER_WORKER {
        p.push(format!(
            "scenario: {users} users over {shards} shards is {} per worker, more than the {MAX_USERS_PER_WORKER} README.md says fit",
            users.div_ceil(shards)
        ));
    }
    let TargetKind::External { urls } = &scenario.target.kind else {
        p.push("scenario: target.kind must be \"external\" (no local stack in a pod)".into());
        return;
    };
    for url in urls {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
            .unwrap_or(url);
        let (authority, url_path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_matches(['[', ']']);
        if host == "localhost" || host.starts_with("127.") || host == "::1" || host == "0.0.0.0" {
            p.push(format!(
                "scenario: target URL {url} is this pod itself, not the chat servers"
            ));
        }
        if format!("/{url_path}") != WS_PATH {
            p.push(format!(
                "scenario: target URL {url} has path /{url_path}; the reference server answers on {WS_PATH}"
            ));
        }
    }
    let t = &scenario.target;
    if t.send != format!("{SEND_PREFIX}{{room}}")
        || t.subscribe != format!("{SUBSCRIBE_PREFIX}{{room}}")
        || t.body != BodyFormat::ChatJson
    {
        p.push(format!(
            "scenario: send {:?}, subscribe {:?}, body {:?} are not the reference server's",
            t.send, t.subscribe, t.body
        ));
    }
}

/// Problems the typed round trip finds: every field of every Job and Service survives
/// decoding into its Kubernetes type (a misspelt or misplaced field is dropped, a wrongly
/// typed one refused), and ConfigMaps have only ConfigMap fields.
fn schema_problems(objs: &[Value]) -> Vec<String> {
    let mut p = Vec::new();
    for o in objs {
        let id = format!(
            "{} {}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"]
        );
        let input = serde_json::to_vec(o).expect("serialise");
        let typed = match o["kind"].as_str() {
            Some("Job") => {
                let mut t = single(kubectl(
                    &[
                        "set",
                        "env",
                        "--local",
                        "-f",
                        "-",
                        "-o",
                        "json",
                        &format!("{PROBE_ENV}=1"),
                    ],
                    Some(&input),
                ));
                let pod = t
                    .pointer_mut("/spec/template/spec")
                    .expect("a pod template");
                for key in ["containers", "initContainers"] {
                    for c in pod[key].as_array_mut().into_iter().flatten() {
                        if let Some(env) = c["env"].as_array_mut() {
                            env.retain(|e| e["name"] != PROBE_ENV);
                        }
                    }
                }
                t
            }
            Some("Service") => {
                let selector: Vec<String> = o["spec"]["selector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                if selector.is_empty() {
                    p.push(format!("{id}: no selector"));
                    continue;
                }
                single(kubectl(
                    &[
                        "set",
                        "selector",
                        "--local",
                        "-f",
                        "-",
                        "-o",
                        "json",
                        &selector.join(","),
                    ],
                    Some(&input),
                ))
            }
            Some("ConfigMap") => {
                let allowed = [
                    "apiVersion",
                    "kind",
                    "metadata",
                    "data",
                    "binaryData",
                    "immutable",
                ];
                for k in o.as_object().expect("an object").keys() {
                    if !allowed.contains(&k.as_str()) {
                        p.push(format!("{id}: unknown field {k}"));
                    }
                }
                if !o["data"]
                    .as_object()
                    .is_some_and(|d| d.values().all(Value::is_string))
                {
                    p.push(format!("{id}: data must map keys to strings"));
                }
                continue;
            }
            other => {
                p.push(format!("{id}: unexpected kind {other:?}"));
                continue;
            }
        };
        let mut found = Vec::new();
        diff(
            &prune(o).unwrap_or_default(),
            &prune(&typed).unwrap_or_default(),
            "",
            &mut found,
        );
        p.extend(found.into_iter().map(|d| format!("{id}: {d}")));
    }
    p
}

fn single(json_text: Vec<u8>) -> Value {
    let mut objs = objects(&json_text);
    assert_eq!(
        objs.len(),
        1,
        "kubectl printed {} objects, want 1",
        objs.len()
    );
    objs.remove(0)
}

fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "deploy/k8s:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn the_kustomization_renders_every_manifest_offline() {
    let by_kustomize: BTreeSet<(String, String)> = rendered()
        .iter()
        .map(|o| (o["kind"].to_string(), o["metadata"]["name"].to_string()))
        .collect();
    let by_files: BTreeSet<(String, String)> = render(&["-f", DIR])
        .iter()
        .filter(|o| o["kind"] != "Kustomization")
        .map(|o| (o["kind"].to_string(), o["metadata"]["name"].to_string()))
        .collect();
    assert_eq!(
        by_kustomize, by_files,
        "kustomization.yaml's resources must be exactly the manifests in deploy/k8s"
    );
    let kinds: Vec<(&str, &str)> = [
        ("ConfigMap", CONFIGMAP),
        ("Service", SERVICE),
        ("Job", COORDINATOR_JOB),
        ("Job", WORKERS_JOB),
    ]
    .into_iter()
    .filter(|(k, n)| find(rendered(), k, n).is_none())
    .collect();
    assert!(kinds.is_empty(), "missing from deploy/k8s: {kinds:?}");
}

#[test]
fn manifests_decode_as_their_kubernetes_types() {
    assert_none(schema_problems(rendered()));
}

#[test]
fn manifests_fit_together() {
    assert_none(problems(rendered()));
}

/// Each break of the manifests is reported by the check written for it.
#[test]
fn every_check_catches_the_break_it_is_for() {
    type Break = fn(&mut Vec<Value>);
    fn coord(o: &mut [Value]) -> &mut Value {
        let job = find_mut(o, "Job", COORDINATOR_JOB);
        job["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == "coordinator")
            .expect("container coordinator")
    }
    fn worker(o: &mut [Value]) -> &mut Value {
        &mut find_mut(o, "Job", WORKERS_JOB)["spec"]["template"]["spec"]["containers"][0]
    }
    fn set_arg(c: &mut Value, name: &str, value: &str) {
        let args = c["args"].as_array_mut().unwrap();
        let i = args.iter().position(|a| a == name).expect("the flag") + 1;
        args[i] = json!(value);
    }
    fn scenario(o: &mut [Value]) -> &mut Value {
        &mut find_mut(o, "ConfigMap", CONFIGMAP)["data"]["scenario.toml"]
    }
    fn edit_scenario(o: &mut [Value], from: &str, to: &str) {
        let s = scenario(o);
        let text = s.as_str().unwrap();
        assert!(text.contains(from), "the scenario has no {from:?}");
        *s = json!(text.replace(from, to));
    }
    let breaks: Vec<(&str, Break, &str)> = vec![
        (
            "the workers Job is gone",
            |o| o.retain(|x| x["metadata"]["name"] != WORKERS_JOB),
            "expected ConfigMap",
        ),
        (
            "a Job is not batch/v1",
            |o| find_mut(o, "Job", WORKERS_JOB)["apiVersion"] = json!("batch/v2"),
            "apiVersion",
        ),
        (
            "two coordinators",
            |o| find_mut(o, "Job", COORDINATOR_JOB)["spec"]["completions"] = json!(2),
            "completions 2",
        ),
        (
            "coordinator retried",
            |o| find_mut(o, "Job", COORDINATOR_JOB)["spec"]["backoffLimit"] = json!(1),
            "backoffLimit",
        ),
        (
            "coordinator restarts in place",
            |o| {
                find_mut(o, "Job", COORDINATOR_JOB)["spec"]["template"]["spec"]["restartPolicy"] =
                    json!("OnFailure")
            },
            "coordinator pod: restartPolicy",
        ),
        (
            "no coordinate container",
            |o| coord(o)["args"][0] = json!("run"),
            "runs `coordinate`",
        ),
        (
            "--shards missing",
            |o| {
                coord(o)["args"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|a| a != "--shards")
            },
            "--shards is missing",
        ),
        (
            "--shards differs",
            |o| set_arg(coord(o), "--shards", "5"),
            "differs from the coordinator's --shards 5",
        ),
        (
            "listening on loopback",
            |o| set_arg(coord(o), "--listen", "127.0.0.1:7700"),
            "not every interface",
        ),
        (
            "listen port without containerPort",
            |o| set_arg(coord(o), "--listen", "0.0.0.0:7701"),
            "no containerPort 7701",
        ),
        (
            "scenario path not mounted",
            |o| coord(o)["args"][1] = json!("/etc/other/scenario.toml"),
            "no volume is mounted at the scenario path",
        ),
        (
            "scenario file name differs",
            |o| coord(o)["args"][1] = json!("/etc/stompede/s.toml"),
            "nothing of it appears at /etc/stompede/s.toml",
        ),
        (
            "ConfigMap key renamed",
            |o| {
                let d = find_mut(o, "ConfigMap", CONFIGMAP)["data"]
                    .as_object_mut()
                    .unwrap();
                let v = d.remove("scenario.toml").unwrap();
                d.insert("smoke.toml".into(), v);
            },
            "nothing of it appears",
        ),
        (
            "scenario mount writable",
            |o| coord(o)["volumeMounts"][0]["readOnly"] = json!(false),
            "not readOnly",
        ),
        (
            "scenario volume from another ConfigMap",
            |o| {
                find_mut(o, "Job", COORDINATOR_JOB)["spec"]["template"]["spec"]["volumes"][0]
                    ["configMap"]["name"] = json!("other")
            },
            "uses ConfigMap \"other\"",
        ),
        (
            "scenario does not load",
            |o| edit_scenario(o, "count = 8000", "count = 0"),
            "does not load",
        ),
        (
            "scenario on the local stack",
            |o| {
                edit_scenario(
                    o,
                    "kind = \"external\"\nurls = [\"ws://stompede-server:8080/ws-stomp\"]",
                    "kind = \"local\"",
                )
            },
            "must be \"external\"",
        ),
        (
            "scenario dials the pod itself",
            |o| edit_scenario(o, "ws://stompede-server:8080", "ws://127.0.0.1:8080"),
            "is this pod itself",
        ),
        (
            "scenario's WebSocket path wrong",
            |o| edit_scenario(o, "/ws-stomp", "/ws"),
            "answers on /ws-stomp",
        ),
        (
            "scenario's destinations not the reference server's",
            |o| {
                edit_scenario(
                    o,
                    "ws-stomp\"]\n",
                    "ws-stomp\"]\nsend = \"/topic/chat.{room}\"\n",
                )
            },
            "not the reference server's",
        ),
        (
            "fewer users than shards",
            |o| {
                edit_scenario(o, "count = 8000", "count = 3");
                edit_scenario(o, "count = 3000\nmembers = 2", "count = 1\nmembers = 2");
                edit_scenario(o, "members = 50\nsenders = 5", "members = 3\nsenders = 3");
            },
            "cannot be split over 4 shards",
        ),
        (
            "too many users per worker",
            |o| edit_scenario(o, "count = 8000", "count = 80004"),
            "per worker",
        ),
        (
            "no --out",
            |o| {
                coord(o)["args"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|a| a != "--out" && a != "/reports")
            },
            "no --out",
        ),
        (
            "--out not a volume",
            |o| set_arg(coord(o), "--out", "/tmp/reports"),
            "is not a mounted volume",
        ),
        (
            "reports container does not see the report",
            |o| {
                let c = &mut find_mut(o, "Job", COORDINATOR_JOB)["spec"]["template"]["spec"]
                    ["containers"][1];
                c["volumeMounts"][0]["mountPath"] = json!("/data");
            },
            "container `reports` must mount",
        ),
        (
            "Service selects nothing",
            |o| {
                find_mut(o, "Service", SERVICE)["spec"]["selector"]["app.kubernetes.io/component"] =
                    json!("coord")
            },
            "does not select the coordinator pod",
        ),
        (
            "Service selects the workers too",
            |o| {
                find_mut(o, "Service", SERVICE)["spec"]["selector"]
                    .as_object_mut()
                    .unwrap()
                    .remove("app.kubernetes.io/component");
            },
            "also selects the worker pods",
        ),
        (
            "Service targetPort misnamed",
            |o| find_mut(o, "Service", SERVICE)["spec"]["ports"][0]["targetPort"] = json!("shard"),
            "not the coordinator's --listen port",
        ),
        (
            "Service targetPort wrong number",
            |o| find_mut(o, "Service", SERVICE)["spec"]["ports"][0]["targetPort"] = json!(7701),
            "not the coordinator's --listen port",
        ),
        (
            "Service over UDP",
            |o| find_mut(o, "Service", SERVICE)["spec"]["ports"][0]["protocol"] = json!("UDP"),
            "protocol \"UDP\"",
        ),
        (
            "workers not Indexed",
            |o| find_mut(o, "Job", WORKERS_JOB)["spec"]["completionMode"] = json!("NonIndexed"),
            "must be Indexed",
        ),
        (
            "completions differ",
            |o| find_mut(o, "Job", WORKERS_JOB)["spec"]["completions"] = json!(3),
            "completions 3 differs",
        ),
        (
            "parallelism differs",
            |o| find_mut(o, "Job", WORKERS_JOB)["spec"]["parallelism"] = json!(2),
            "parallelism 2 differs",
        ),
        (
            "no per-index retries",
            |o| {
                find_mut(o, "Job", WORKERS_JOB)["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("backoffLimitPerIndex");
            },
            "backoffLimitPerIndex",
        ),
        (
            "failed indexes tolerated",
            |o| find_mut(o, "Job", WORKERS_JOB)["spec"]["maxFailedIndexes"] = json!(1),
            "maxFailedIndexes",
        ),
        (
            "worker restarts in place",
            |o| {
                find_mut(o, "Job", WORKERS_JOB)["spec"]["template"]["spec"]["restartPolicy"] =
                    json!("OnFailure")
            },
            "worker pod: restartPolicy",
        ),
        (
            "podFailurePolicy names no container",
            |o| {
                find_mut(o, "Job", WORKERS_JOB)["spec"]["podFailurePolicy"]["rules"][0]
                    ["onExitCodes"]["containerName"] = json!("workers")
            },
            "podFailurePolicy names container workers",
        ),
        (
            "no worker container",
            |o| worker(o)["args"][0] = json!("run"),
            "runs `worker`",
        ),
        (
            "no --coordinator",
            |o| worker(o)["args"].as_array_mut().unwrap().truncate(1),
            "--coordinator HOST:PORT is missing",
        ),
        (
            "coordinator host wrong",
            |o| set_arg(worker(o), "--coordinator", "coordinator:7700"),
            "is not the Service",
        ),
        (
            "coordinator port wrong",
            |o| set_arg(worker(o), "--coordinator", "stompede-coordinator:7701"),
            "is not a port of Service",
        ),
        (
            "fixed shard",
            |o| {
                worker(o)["args"]
                    .as_array_mut()
                    .unwrap()
                    .extend([json!("--shard"), json!("0")])
            },
            "same shard",
        ),
        (
            "index set by hand",
            |o| {
                worker(o)["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "JOB_COMPLETION_INDEX", "value": "0"}))
            },
            "set by hand",
        ),
        (
            "host from the pod name",
            |o| worker(o)["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] = json!("metadata.name"),
            "spec.nodeName",
        ),
        (
            "no STOMPEDE_HOST",
            |o| {
                worker(o).as_object_mut().unwrap().remove("env");
            },
            "spec.nodeName",
        ),
        (
            "no memory limit",
            |o| {
                worker(o)["resources"]["limits"]
                    .as_object_mut()
                    .unwrap()
                    .remove("memory");
            },
            "resources.limits.memory",
        ),
        (
            "no cpu request",
            |o| {
                worker(o)["resources"]["requests"]
                    .as_object_mut()
                    .unwrap()
                    .remove("cpu");
            },
            "resources.requests.cpu",
        ),
        (
            "two images",
            |o| worker(o)["image"] = json!("stompede:other"),
            "different images",
        ),
        (
            "entrypoint replaced",
            |o| worker(o)["command"] = json!(["sh", "-c"]),
            "replaces the image's entrypoint",
        ),
    ];
    let mut silent = Vec::new();
    for (what, apply, expect) in &breaks {
        let mut objs = rendered().to_vec();
        apply(&mut objs);
        let found = problems(&objs);
        if !found.iter().any(|f| f.contains(expect)) {
            silent.push(format!(
                "{what}: want a problem containing {expect:?}, got {found:?}"
            ));
        }
    }

    // The typed round trip.
    let schema_breaks: Vec<(&str, Break, &str)> = vec![
        (
            "misspelt Job field",
            |o| {
                let spec = find_mut(o, "Job", WORKERS_JOB)["spec"]
                    .as_object_mut()
                    .unwrap();
                let v = spec.remove("completionMode").unwrap();
                spec.insert("completionMod".into(), v);
            },
            ".spec.completionMod: dropped",
        ),
        (
            "field in the wrong place",
            |o| {
                worker(o)["sysctls"] =
                    json!([{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}])
            },
            "containers[0].sysctls: dropped",
        ),
        (
            "misspelt Service field",
            |o| find_mut(o, "Service", SERVICE)["spec"]["ports"][0]["targetport"] = json!(7700),
            "targetport: dropped",
        ),
        (
            "unknown ConfigMap field",
            |o| find_mut(o, "ConfigMap", CONFIGMAP)["date"] = json!({}),
            "unknown field date",
        ),
        (
            "ConfigMap value not a string",
            |o| find_mut(o, "ConfigMap", CONFIGMAP)["data"]["n"] = json!(1),
            "data must map keys to strings",
        ),
    ];
    for (what, apply, expect) in &schema_breaks {
        let mut objs = rendered().to_vec();
        apply(&mut objs);
        let found = schema_problems(&objs);
        if !found.iter().any(|f| f.contains(expect)) {
            silent.push(format!(
                "{what}: want a schema problem containing {expect:?}, got {found:?}"
            ));
        }
    }
    assert!(
        silent.is_empty(),
        "checks that missed their break:\n  {}",
        silent.join("\n  ")
    );
}

/// A wrongly typed field fails kubectl's decoding outright.
#[test]
#[should_panic(expected = "cannot unmarshal")]
fn a_wrongly_typed_field_fails_decoding() {
    let mut objs = rendered().to_vec();
    find_mut(&mut objs, "Job", WORKERS_JOB)["spec"]["parallelism"] = json!("4");
    schema_problems(&objs);
}
