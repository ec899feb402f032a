//! Kubernetes resource quantities, and what they become: cgroup settings for
//! the runtime, the pod's QoS class, and resourceFieldRef values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::runtime::Resources;

/// CFS period the kubelet uses, in microseconds.
pub const CPU_PERIOD: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MIN_QUOTA: i64 = 1_000;

/// A parsed quantity: `num × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    num: i128,
    exp10: i32,
    exp2: u32,
}

impl Amount {
    /// Parse `100m`, `1.5`, `128Mi`, `1G`, `1e3`.
    pub fn parse(s: &str) -> Option<Amount> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let (neg, number) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = format!("{int}{frac}");
        let mut num: i128 = digits.parse().ok()?;
        if neg {
            num = -num;
        }
        let mut exp10 = -(frac.len() as i32);
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().ok()?,
            _ => return None,
        }
        Some(Amount { num, exp10, exp2 })
    }

    /// ⌈value × 10^-scale⌉, saturating.
    fn ceil_scaled(&self, scale: i32) -> i128 {
        let mut n = self.num.saturating_mul(1i128.checked_shl(self.exp2).unwrap_or(i128::MAX));
        let e = self.exp10 - scale;
        if e >= 0 {
            for _ in 0..e {
                n = n.saturating_mul(10);
            }
            n
        } else {
            let mut d: i128 = 1;
            for _ in 0..(-e) {
                d = d.saturating_mul(10);
            }
            let q = n / d;
            if n % d > 0 {
                q + 1
            } else {
                q
            }
        }
    }

    /// The value in thousandths, rounded up (Kubernetes' MilliValue).
    pub fn milli(&self) -> i64 {
        self.ceil_scaled(-3).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// The value rounded up to a whole number (Kubernetes' Value).
    pub fn value(&self) -> i64 {
        self.ceil_scaled(0).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

pub fn amount(q: &Quantity) -> Option<Amount> {
    Amount::parse(&q.0)
}

fn get(map: &Option<BTreeMap<String, Quantity>>, name: &str) -> Option<Amount> {
    map.as_ref()?.get(name).and_then(amount)
}

/// A container's requests, with limits standing in for requests left unset
/// (as the API server's defaulting does).
pub fn request(c: &Container, name: &str) -> Option<Amount> {
    let r = c.resources.as_ref()?;
    get(&r.requests, name).or_else(|| get(&r.limits, name))
}

pub fn limit(c: &Container, name: &str) -> Option<Amount> {
    get(&c.resources.as_ref()?.limits, name)
}

/// cpu shares for a cpu request in millicores (the kubelet's MilliCPUToShares).
pub fn shares(milli: i64) -> u64 {
    if milli <= 0 {
        MIN_SHARES
    } else {
        ((milli as u64) * 1024 / 1000).max(MIN_SHARES)
    }
}

/// The CFS quota for a cpu limit in millicores, per [`CPU_PERIOD`].
pub fn quota(milli: i64) -> i64 {
    (milli * CPU_PERIOD as i64 / 1000).max(MIN_QUOTA)
}

/// cgroup settings: cpu shares from requests.cpu, CFS quota from limits.cpu,
/// memory limit from limits.memory.
pub fn runtime_resources(c: &Container) -> Resources {
    let shares = shares(request(c, "cpu").map(|a| a.milli()).unwrap_or(0));
    let quota = limit(c, "cpu").map(|a| a.milli()).filter(|m| *m > 0).map(quota);
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: quota.map(|_| CPU_PERIOD),
        memory_limit: limit(c, "memory").map(|a| a.value()).filter(|m| *m > 0),
    }
}

/// The pod's QoS class: Guaranteed, Burstable or BestEffort.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else { return "BestEffort" };
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i64> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let mut found = 0;
        for name in ["cpu", "memory"] {
            if let Some(r) = request(c, name).map(|a| a.milli()).filter(|m| *m > 0) {
                *requests.entry(name).or_default() += r;
            }
            if let Some(l) = limit(c, name).map(|a| a.milli()).filter(|m| *m > 0) {
                *limits.entry(name).or_default() += l;
                found += 1;
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The value a resourceFieldRef (`limits.cpu`, `requests.memory`, ...)
/// gives, divided by `divisor` and rounded up; an unset limit is the node's
/// allocatable amount.
pub fn resource_field_value(
    c: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    node_allocatable: &BTreeMap<String, Amount>,
) -> Result<String, String> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("unsupported container resource: {resource}"))?;
    let value = match kind {
        "limits" => limit(c, name),
        "requests" => c.resources.as_ref().and_then(|r| get(&r.requests, name)).or_else(|| limit(c, name)),
        _ => return Err(format!("unsupported container resource: {resource}")),
    };
    let value = match value {
        Some(v) => v,
        None if kind == "limits" => node_allocatable.get(name).copied().unwrap_or(Amount { num: 0, exp10: 0, exp2: 0 }),
        None => Amount { num: 0, exp10: 0, exp2: 0 },
    };
    let divisor = divisor.and_then(amount).filter(|d| d.milli() > 0).unwrap_or(Amount { num: 1, exp10: 0, exp2: 0 });
    let (v, d) = if name == "cpu" {
        (value.milli() as i128, divisor.milli() as i128)
    } else {
        (value.value() as i128, divisor.value().max(1) as i128)
    };
    let q = v / d + i128::from(v % d > 0);
    Ok(q.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(res: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "resources": res})).unwrap()
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        let m = |s: &str| Amount::parse(s).unwrap().milli();
        let v = |s: &str| Amount::parse(s).unwrap().value();
        assert_eq!(m("100m"), 100);
        assert_eq!(m("0.1"), 100);
        assert_eq!(m("1.5"), 1500);
        assert_eq!(m("2"), 2000);
        assert_eq!(v("128Mi"), 128 * 1024 * 1024);
        assert_eq!(v("1G"), 1_000_000_000);
        assert_eq!(v("1e3"), 1000);
        assert_eq!(v("1.5Ki"), 1536);
        assert_eq!(v("100m"), 1);
        assert!(Amount::parse("12x").is_none());
        assert!(Amount::parse("").is_none());
    }

    #[test]
    fn cgroup_settings_follow_the_kubelet() {
        let r = runtime_resources(&container(
            serde_json::json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}),
        ));
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(64 << 20));
        let r = runtime_resources(&container(serde_json::json!({})));
        assert_eq!(r, Resources { cpu_shares: Some(2), ..Default::default() });
        // tiny values hit the minimums
        let r = runtime_resources(&container(serde_json::json!({"requests": {"cpu": "1m"}, "limits": {"cpu": "1m"}})));
        assert_eq!((r.cpu_shares, r.cpu_quota), (Some(2), Some(1000)));
        // a limit alone is also the request
        let r = runtime_resources(&container(serde_json::json!({"limits": {"cpu": "1"}})));
        assert_eq!(r.cpu_shares, Some(1024));
    }

    #[test]
    fn qos_classes() {
        let pod = |res: Vec<serde_json::Value>| -> Pod {
            let cs: Vec<_> = res
                .into_iter()
                .enumerate()
                .map(|(i, r)| serde_json::json!({"name": format!("c{i}"), "resources": r}))
                .collect();
            serde_json::from_value(serde_json::json!({"metadata": {}, "spec": {"containers": cs}})).unwrap()
        };
        assert_eq!(qos_class(&pod(vec![serde_json::json!({})])), "BestEffort");
        assert_eq!(qos_class(&pod(vec![serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}})])), "Guaranteed");
        assert_eq!(
            qos_class(&pod(vec![
                serde_json::json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}),
                serde_json::json!({})
            ])),
            "Burstable"
        );
        assert_eq!(qos_class(&pod(vec![serde_json::json!({"requests": {"cpu": "100m"}})])), "Burstable");
    }

    #[test]
    fn resource_field_refs() {
        let c =
            container(serde_json::json!({"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}));
        let mut node = BTreeMap::new();
        node.insert("cpu".to_string(), Amount::parse("4").unwrap());
        assert_eq!(resource_field_value(&c, "requests.cpu", None, &node).unwrap(), "1");
        assert_eq!(resource_field_value(&c, "requests.cpu", Some(&Quantity("1m".into())), &node).unwrap(), "250");
        assert_eq!(resource_field_value(&c, "limits.cpu", None, &node).unwrap(), "4");
        assert_eq!(resource_field_value(&c, "limits.memory", Some(&Quantity("1Mi".into())), &node).unwrap(), "64");
        assert_eq!(resource_field_value(&c, "limits.memory", None, &node).unwrap(), (64 << 20).to_string());
    }
}
