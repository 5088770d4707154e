//! The network lab: a small internet, DMZ and internal network built from network namespaces,
//! veth pairs and a router namespace running nftables, on one machine, with no traffic leaving
//! it. Only addresses inside these namespaces (10.201.0.0/16) are used.
//!
//! ```text
//!   internet hosts (sites)     router (nftables: perimeter, internal, NAT)     dmz: gateway, dmz probe
//!   inet-<site><n> ─ r-<tag> ─┐                                          ┌─ r-gw ─ gateway (8443, 443)
//!                             ├── router ── VIP 10.201.250.10 (DNAT) ────┤─ r-dz ─ dmz probe
//!   root namespace (coordinator) ─ r-mg ┘                                └─ r-smp ─ smp (4726, 443)
//! ```
//!
//! Every namespace is deleted on drop; `tests/lab/run` also deletes leftovers (`cw-lab-*`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// The gateway's public address (a VIP on the router, DNATed to the gateway).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 201, 250, 10);

/// A host of the lab.
#[derive(Debug)]
pub struct Host {
    /// Its namespace.
    pub ns: Netns,
    /// Its address.
    pub addr: Ipv4Addr,
    /// The router's interface towards it.
    pub router_if: String,
    /// Site label (internet hosts).
    pub site: String,
}

/// The lab.
#[derive(Debug)]
pub struct Lab {
    /// The router.
    pub router: Netns,
    /// Internet probe hosts by name (`a1`, `a2`, `b1`, ...).
    pub internet: BTreeMap<String, Host>,
    /// The gateway host.
    pub gateway: Host,
    /// The DMZ probe host.
    pub dmz_probe: Host,
    /// The SMP host.
    pub smp: Host,
    /// The root namespace's address, where the coordinator listens.
    pub coordinator_addr: Ipv4Addr,
    root_if: String,
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!("{shown}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn link(router: &Netns, tag: &str, host: &Netns, subnet: u8) -> Result<(Ipv4Addr, String)> {
    let router_if = format!("r-{tag}");
    let host_if = format!("h-{tag}");
    router.exec(&[
        "ip", "link", "add", &router_if, "type", "veth", "peer", "name", &host_if, "netns",
        &host.name,
    ])?;
    let router_addr = format!("10.201.{subnet}.254/24");
    let host_addr = Ipv4Addr::new(10, 201, subnet, 1);
    router.exec(&["ip", "addr", "add", &router_addr, "dev", &router_if])?;
    router.exec(&["ip", "link", "set", &router_if, "up"])?;
    host.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{host_addr}/24"),
        "dev",
        &host_if,
    ])?;
    host.exec(&["ip", "link", "set", &host_if, "up"])?;
    host.exec(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &format!("10.201.{subnet}.254"),
    ])?;
    Ok((host_addr, router_if))
}

impl Lab {
    /// Builds the lab with internet sites `sites` (name, hosts).
    pub fn build(sites: &[(&str, usize)]) -> Result<Self> {
        let router = Netns::create("lab-router")?;
        router.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        router.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        let mut subnet = 1u8;
        let mut host = |tag: &str, site: &str| -> Result<Host> {
            let ns = Netns::create(&format!("lab-{tag}"))?;
            let (addr, router_if) = link(&router, tag, &ns, subnet)?;
            subnet += 1;
            Ok(Host {
                ns,
                addr,
                router_if,
                site: site.to_string(),
            })
        };
        let mut internet = BTreeMap::new();
        for (site, n) in sites {
            for i in 1..=*n {
                let tag = format!("{}{i}", &site[..1]);
                internet.insert(tag.clone(), host(&tag, site)?);
            }
        }
        let gateway = host("gw", "dmz")?;
        let dmz_probe = host("dz", "dmz")?;
        let smp = host("smp", "internal")?;
        // The root namespace, where the coordinator and the test run.
        let root_if = format!("cwm{}", std::process::id() % 100_000);
        run(Command::new("ip").args([
            "link",
            "add",
            &root_if,
            "type",
            "veth",
            "peer",
            "name",
            "r-mg",
            "netns",
            &router.name,
        ]))?;
        run(Command::new("ip").args(["addr", "add", "10.201.50.1/24", "dev", &root_if]))?;
        run(Command::new("ip").args(["link", "set", &root_if, "up"]))?;
        router.exec(&["ip", "addr", "add", "10.201.50.254/24", "dev", "r-mg"])?;
        router.exec(&["ip", "link", "set", "r-mg", "up"])?;
        run(Command::new("ip").args([
            "route",
            "add",
            "10.201.0.0/16",
            "via",
            "10.201.50.254",
            "dev",
            &root_if,
        ]))?;
        let lab = Self {
            router,
            internet,
            gateway,
            dmz_probe,
            smp,
            coordinator_addr: Ipv4Addr::new(10, 201, 50, 1),
            root_if,
        };
        lab.firewall(&Firewall::default())?;
        Ok(lab)
    }

    /// Internet hosts of a site.
    pub fn site(&self, site: &str) -> Vec<&Host> {
        self.internet.values().filter(|h| h.site == site).collect()
    }

    /// Applies the router's whole ruleset (NAT, perimeter, internal firewall), atomically.
    pub fn firewall(&self, fw: &Firewall) -> Result<()> {
        let gw = self.gateway.addr;
        let inet_ifs: Vec<String> = self
            .internet
            .values()
            .map(|h| format!("\"{}\"", h.router_if))
            .collect();
        let inet_ifs = inet_ifs.join(", ");
        let mut forward = Vec::new();
        if let Some(rule) = &fw.perimeter_8443 {
            forward.push(format!(
                "iifname {{ {inet_ifs} }} ip daddr {gw} tcp dport 8443 {rule}"
            ));
        }
        for site in &fw.cut_sites {
            let ifs: Vec<String> = self
                .site(site)
                .iter()
                .map(|h| format!("\"{}\"", h.router_if))
                .collect();
            if !ifs.is_empty() {
                forward.push(format!(
                    "iifname {{ {} }} ip daddr {gw} drop",
                    ifs.join(", ")
                ));
            }
        }
        if fw.internal_block_4726 {
            forward.push(format!(
                "iifname {{ \"{}\", \"{}\" }} oifname \"{}\" tcp dport 4726 drop",
                self.gateway.router_if, self.dmz_probe.router_if, self.smp.router_if
            ));
        }
        if fw.loss_pct > 0 {
            forward.push(format!(
                "iifname {{ {inet_ifs} }} numgen random mod 100 < {} drop",
                fw.loss_pct
            ));
            forward.push(format!(
                "oifname {{ {inet_ifs} }} numgen random mod 100 < {} drop",
                fw.loss_pct
            ));
        }
        if fw.coordinator_cut {
            forward.push("oifname \"r-mg\" meta l4proto udp drop".to_string());
        }
        let dnat_8443 = fw.nat_8443_to.unwrap_or(8443);
        let ruleset = format!(
            "flush ruleset\n\
             table ip nat {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} tcp dport 8443 dnat to {gw}:{dnat_8443}\n    ip daddr {VIP} tcp dport 443 dnat to {gw}:443\n  }}\n}}\n\
             table inet filter {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    {}\n  }}\n}}\n",
            forward.join("\n    ")
        );
        self.router.nft(&ruleset)
    }

    /// Adds loss and delay on the router's interfaces towards the internet hosts with `tc
    /// netem`. Kernels built without netem get the loss from nftables (`numgen random`) and no
    /// delay; the returned text says which was applied.
    pub fn impair(&self, loss_pct: u32, delay_ms: u32, fw: &Firewall) -> Result<String> {
        let mut netem = true;
        for h in self.internet.values() {
            let r = self.router.exec(&[
                "tc",
                "qdisc",
                "replace",
                "dev",
                &h.router_if,
                "root",
                "netem",
                "loss",
                &format!("{loss_pct}%"),
                "delay",
                &format!("{delay_ms}ms"),
            ]);
            if let Err(e) = r {
                if e.to_string().contains("unknown") {
                    netem = false;
                    break;
                }
                return Err(e);
            }
        }
        if netem {
            return Ok(format!("tc netem: {loss_pct}% loss, {delay_ms} ms delay"));
        }
        let mut fw = fw.clone();
        fw.loss_pct = loss_pct;
        self.firewall(&fw)?;
        Ok(format!(
            "{loss_pct}% loss with nftables numgen (this kernel has no netem qdisc, so no added delay)"
        ))
    }

    /// Removes the impairment (and restores `fw`).
    pub fn heal(&self, fw: &Firewall) -> Result<()> {
        for h in self.internet.values() {
            let _ = self
                .router
                .exec(&["tc", "qdisc", "del", "dev", &h.router_if, "root"]);
        }
        self.firewall(fw)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", "10.201.0.0/16"])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_if])
            .output();
    }
}

/// The router's rules for one scenario.
#[derive(Debug, Clone, Default)]
pub struct Firewall {
    /// What the perimeter does to internet → gateway TCP 8443 (`drop`, `reject with tcp reset`).
    pub perimeter_8443: Option<String>,
    /// NAT translates the VIP's 8443 to this port of the gateway instead of 8443.
    pub nat_8443_to: Option<u16>,
    /// The internal firewall drops DMZ → SMP 4726.
    pub internal_block_4726: bool,
    /// Sites whose traffic to the gateway is dropped (uplink cut).
    pub cut_sites: Vec<String>,
    /// Probes' traffic to the coordinator is dropped.
    pub coordinator_cut: bool,
    /// Random loss (percent) on the internet hosts' links, when netem is not available.
    pub loss_pct: u32,
}
