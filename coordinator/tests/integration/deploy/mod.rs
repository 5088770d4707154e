//! Deployment, validated as far as this machine allows: every YAML and JSON file under
//! `deploy/` parses and the files agree with each other and with the code (ports, paths, binary
//! names, the configuration examples); `systemd-analyze` verifies the units; `promtool` checks
//! the Prometheus files; the coordinator serves the paths the manifests probe. And scale-out:
//! two coordinators sharing a CA, probes split between them and failing over, one real
//! Prometheus summing both.

mod dashboards;
mod files;
mod scale_out;
mod secured;
