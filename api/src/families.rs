//! IP families and the dual-stack ranges a cluster is configured with
//! (`--cluster-cidr`, `--service-cidr`): one CIDR, or an IPv4 and an IPv6
//! CIDR separated by a comma, the first being the primary family (k3s'
//! syntax, Kubernetes' `--service-cluster-ip-range`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The name the API uses (`spec.ipFamilies`).
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    pub fn from_api(s: &str) -> Option<IpFamily> {
        match s {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> IpFamily {
        IpFamily::of(net.addr())
    }

    pub fn other(self) -> IpFamily {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One CIDR per configured family, the primary first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualCidr {
    pub primary: IpNet,
    pub secondary: Option<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not a CIDR such as 10.96.0.0/12 or fd00:10:96::/112")]
    NotACidr(String),
    #[error("give one CIDR, or two separated by a comma: one IPv4 and one IPv6")]
    Count(String),
    #[error("the two CIDRs must be of different families (one IPv4, one IPv6)")]
    SameFamily(String),
}

impl DualCidr {
    pub fn single(net: IpNet) -> DualCidr {
        DualCidr { primary: net.trunc(), secondary: None }
    }

    pub fn is_dual(&self) -> bool {
        self.secondary.is_some()
    }

    pub fn primary_family(&self) -> IpFamily {
        IpFamily::of_net(&self.primary)
    }

    /// The configured families, primary first.
    pub fn families(&self) -> Vec<IpFamily> {
        self.iter().map(|n| IpFamily::of_net(&n)).collect()
    }

    /// The CIDRs, primary first.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        std::iter::once(self.primary).chain(self.secondary)
    }

    pub fn get(&self, family: IpFamily) -> Option<IpNet> {
        self.iter().find(|n| IpFamily::of_net(n) == family)
    }

    pub fn v4(&self) -> Option<Ipv4Net> {
        match self.get(IpFamily::V4)? {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        }
    }

    pub fn v6(&self) -> Option<Ipv6Net> {
        match self.get(IpFamily::V6)? {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        }
    }

    /// Whether `ip` is inside the range of its family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.get(IpFamily::of(ip)).is_some_and(|n| n.contains(&ip))
    }
}

impl FromStr for DualCidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<DualCidr, CidrError> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let parse = |p: &str| p.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| CidrError::NotACidr(p.to_string()));
        match parts.as_slice() {
            [one] => Ok(DualCidr { primary: parse(one)?, secondary: None }),
            [a, b] => {
                let (a, b) = (parse(a)?, parse(b)?);
                if IpFamily::of_net(&a) == IpFamily::of_net(&b) {
                    return Err(CidrError::SameFamily(s.to_string()));
                }
                Ok(DualCidr { primary: a, secondary: Some(b) })
            }
            _ => Err(CidrError::Count(s.to_string())),
        }
    }
}

impl fmt::Display for DualCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.secondary {
            Some(s) => write!(f, "{},{}", self.primary, s),
            None => write!(f, "{}", self.primary),
        }
    }
}

impl From<Ipv4Net> for DualCidr {
    fn from(n: Ipv4Net) -> DualCidr {
        DualCidr::single(IpNet::V4(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_or_two_families() {
        let one: DualCidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(one.families(), vec![IpFamily::V4]);
        assert!(!one.is_dual());
        let two: DualCidr = "10.96.0.0/12, fd00:10:96::/112".parse().unwrap();
        assert_eq!(two.families(), vec![IpFamily::V4, IpFamily::V6]);
        assert_eq!(two.v6().unwrap().to_string(), "fd00:10:96::/112");
        assert_eq!(two.to_string(), "10.96.0.0/12,fd00:10:96::/112");
        let v6_first: DualCidr = "fd00:10:96::/112,10.96.0.0/12".parse().unwrap();
        assert_eq!(v6_first.primary_family(), IpFamily::V6);
        assert!(v6_first.contains("10.96.0.5".parse().unwrap()));
        assert!(!v6_first.contains("10.112.0.5".parse().unwrap()));
    }

    #[test]
    fn refuses_what_is_not_a_pair_of_families() {
        assert_eq!(
            "10.96.0.0/12,10.0.0.0/8".parse::<DualCidr>(),
            Err(CidrError::SameFamily("10.96.0.0/12,10.0.0.0/8".into()))
        );
        assert!(matches!("a,b,c".parse::<DualCidr>(), Err(CidrError::Count(_))));
        assert!(matches!("10.96.0.0".parse::<DualCidr>(), Err(CidrError::NotACidr(_))));
    }
}
