//! The instance types imds knows: their vCPUs (cores and threads per core), memory,
//! architecture, hypervisor and network performance, as EC2 documents them. `DescribeInstances`
//! shows an instance's `CpuOptions` from here and `DescribeInstanceTypes` answers from here;
//! a type not listed is still launched and served (EC2 adds types every year), only without
//! these details.

/// One instance type's hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    /// For example `t3.medium`.
    pub name: &'static str,
    /// Its vCPUs.
    pub vcpus: u32,
    /// Threads per core (2 with hyper-threading, 1 on Graviton and older burstable types).
    pub threads_per_core: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// `x86_64` or `arm64` (`m1.small` also runs `i386`).
    pub architectures: &'static [&'static str],
    /// `nitro` or `xen`.
    pub hypervisor: &'static str,
    /// For example `Up to 5 Gigabit`.
    pub network_performance: &'static str,
    /// Whether EC2 counts it as current generation.
    pub current_generation: bool,
    /// Whether it is a burstable (T) type.
    pub burstable: bool,
}

impl InstanceType {
    /// Physical cores.
    pub fn cores(&self) -> u32 {
        self.vcpus / self.threads_per_core
    }

    /// The Nitro types support ENA and EBS optimisation by default.
    pub fn ena_supported(&self) -> bool {
        self.hypervisor == "nitro"
    }
}

/// A family: every size shares its architecture, hypervisor, threads and network.
struct Family {
    prefix: &'static str,
    architectures: &'static [&'static str],
    hypervisor: &'static str,
    threads_per_core: u32,
    network: &'static str,
    current: bool,
    burstable: bool,
    /// `(size, vCPUs, memory MiB)`.
    sizes: &'static [(&'static str, u32, u64)],
}

const X86: &[&str] = &["x86_64"];
const ARM: &[&str] = &["arm64"];

/// The burstable sizes of `t3`, `t3a` and `t4g`.
const T_SIZES: &[(&str, u32, u64)] = &[
    ("nano", 2, 512),
    ("micro", 2, 1024),
    ("small", 2, 2048),
    ("medium", 2, 4096),
    ("large", 2, 8192),
    ("xlarge", 4, 16384),
    ("2xlarge", 8, 32768),
];
/// General purpose: 4 GiB per vCPU.
const M_SIZES: &[(&str, u32, u64)] = &[
    ("large", 2, 8192),
    ("xlarge", 4, 16384),
    ("2xlarge", 8, 32768),
    ("4xlarge", 16, 65536),
];
/// Compute optimised: 2 GiB per vCPU.
const C_SIZES: &[(&str, u32, u64)] = &[
    ("large", 2, 4096),
    ("xlarge", 4, 8192),
    ("2xlarge", 8, 16384),
    ("4xlarge", 16, 32768),
];
/// Memory optimised: 8 GiB per vCPU.
const R_SIZES: &[(&str, u32, u64)] = &[
    ("large", 2, 16384),
    ("xlarge", 4, 32768),
    ("2xlarge", 8, 65536),
    ("4xlarge", 16, 131072),
];

const FAMILIES: &[Family] = &[
    Family {
        prefix: "m1",
        architectures: &["i386", "x86_64"],
        hypervisor: "xen",
        threads_per_core: 1,
        network: "Low",
        current: false,
        burstable: false,
        sizes: &[("small", 1, 1740)],
    },
    Family {
        prefix: "t2",
        architectures: X86,
        hypervisor: "xen",
        threads_per_core: 1,
        network: "Low to Moderate",
        current: true,
        burstable: true,
        sizes: &[
            ("nano", 1, 512),
            ("micro", 1, 1024),
            ("small", 1, 2048),
            ("medium", 2, 4096),
            ("large", 2, 8192),
            ("xlarge", 4, 16384),
            ("2xlarge", 8, 32768),
        ],
    },
    Family {
        prefix: "t3",
        architectures: X86,
        hypervisor: "nitro",
        threads_per_core: 2,
        network: "Up to 5 Gigabit",
        current: true,
        burstable: true,
        sizes: T_SIZES,
    },
    Family {
        prefix: "t3a",
        architectures: X86,
        hypervisor: "nitro",
        threads_per_core: 2,
        network: "Up to 5 Gigabit",
        current: true,
        burstable: true,
        sizes: T_SIZES,
    },
    Family {
        prefix: "t4g",
        architectures: ARM,
        hypervisor: "nitro",
        threads_per_core: 1,
        network: "Up to 5 Gigabit",
        current: true,
        burstable: true,
        sizes: T_SIZES,
    },
    Family {
        prefix: "m5",
        architectures: X86,
        hypervisor: "nitro",
        threads_per_core: 2,
        network: "Up to 10 Gigabit",
        current: true,
        burstable: false,
        sizes: M_SIZES,
    },
    Family {
        prefix: "m6i",
        architectures: X86,
        hypervisor: "nitro",
        threads_per_core: 2,
        network: "Up to 12.5 Gigabit",
        current: true,
        burstable: false,
        sizes: M_SIZES,
    },
    Family {
        prefix: "m6g",
        architectures: ARM,
        hypervisor: "nitro",
        threads_per_core: 1,
        network: "Up to 10 Gigabit",
        current: true,
        burstable: false,
        sizes: M_SIZES,
    },
    Family {
        prefix: "m7g",
        architectures: ARM,
        hypervisor: "nitro",
        threads_per_core: 1,
        network: "Up to 12.5 Gigabit",
        current: true,
        burstable: false,
        sizes: M_SIZES,
    },
    Family {
        prefix: "c5",
        architectures: X86,
        hypervisor: "nitro",
        threads_per_core: 2,
        network: "Up to 10 Gigabit",
        current: true,
        burstable: false,
        sizes: C_SIZES,
    },
    Family {
        prefix: "c6g",
        architectures: ARM,
        hypervisor: "nitro",
        threads_per_core: 1,
        network: "Up to 10 Gigabit",
        current: true,
        burstable: false,
        sizes: C_SIZES,
    },
    Family {
        prefix: "c7g",
        architectures: ARM,
        hypervisor: "nitro",
        threads_per_core: 1,
        network: "Up to 12.5 Gigabit",
        current: true,
        burstable: false,
        sizes: C_SIZES,
    },
    Family {
        prefix: "r5",
        architectures: X86,
        hypervisor: "nitro",
        threads_per_core: 2,
        network: "Up to 10 Gigabit",
        current: true,
        burstable: false,
        sizes: R_SIZES,
    },
    Family {
        prefix: "r6g",
        architectures: ARM,
        hypervisor: "nitro",
        threads_per_core: 1,
        network: "Up to 10 Gigabit",
        current: true,
        burstable: false,
        sizes: R_SIZES,
    },
];

/// Every type imds knows, family by family, smallest first.
pub fn all() -> impl Iterator<Item = InstanceType> {
    FAMILIES.iter().flat_map(|family| {
        family.sizes.iter().map(move |(size, vcpus, memory)| {
            let name = NAMES
                .iter()
                .find(|n| n.split_once('.') == Some((family.prefix, size)))
                .copied()
                .expect("every family size has its name in NAMES");
            InstanceType {
                name,
                vcpus: *vcpus,
                threads_per_core: family.threads_per_core,
                memory_mib: *memory,
                architectures: family.architectures,
                hypervisor: family.hypervisor,
                network_performance: family.network,
                current_generation: family.current,
                burstable: family.burstable,
            }
        })
    })
}

/// The type called `name`, if imds knows it.
pub fn find(name: &str) -> Option<InstanceType> {
    all().find(|t| t.name == name)
}

/// The names of the types above, as `'static` strings.
const NAMES: &[&str] = &[
    "m1.small",
    "t2.nano",
    "t2.micro",
    "t2.small",
    "t2.medium",
    "t2.large",
    "t2.xlarge",
    "t2.2xlarge",
    "t3.nano",
    "t3.micro",
    "t3.small",
    "t3.medium",
    "t3.large",
    "t3.xlarge",
    "t3.2xlarge",
    "t3a.nano",
    "t3a.micro",
    "t3a.small",
    "t3a.medium",
    "t3a.large",
    "t3a.xlarge",
    "t3a.2xlarge",
    "t4g.nano",
    "t4g.micro",
    "t4g.small",
    "t4g.medium",
    "t4g.large",
    "t4g.xlarge",
    "t4g.2xlarge",
    "m5.large",
    "m5.xlarge",
    "m5.2xlarge",
    "m5.4xlarge",
    "m6i.large",
    "m6i.xlarge",
    "m6i.2xlarge",
    "m6i.4xlarge",
    "m6g.large",
    "m6g.xlarge",
    "m6g.2xlarge",
    "m6g.4xlarge",
    "m7g.large",
    "m7g.xlarge",
    "m7g.2xlarge",
    "m7g.4xlarge",
    "c5.large",
    "c5.xlarge",
    "c5.2xlarge",
    "c5.4xlarge",
    "c6g.large",
    "c6g.xlarge",
    "c6g.2xlarge",
    "c6g.4xlarge",
    "c7g.large",
    "c7g.xlarge",
    "c7g.2xlarge",
    "c7g.4xlarge",
    "r5.large",
    "r5.xlarge",
    "r5.2xlarge",
    "r5.4xlarge",
    "r6g.large",
    "r6g.xlarge",
    "r6g.2xlarge",
    "r6g.4xlarge",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_type_and_every_type_has_its_name() {
        assert_eq!(all().count(), NAMES.len());
        for name in NAMES {
            assert_eq!(find(name).map(|t| t.name), Some(*name));
        }
    }

    #[test]
    fn cores_and_threads_follow_the_family() {
        let t3 = find("t3.medium").unwrap();
        assert_eq!((t3.vcpus, t3.cores(), t3.threads_per_core), (2, 1, 2));
        let graviton = find("m7g.xlarge").unwrap();
        assert_eq!((graviton.cores(), graviton.architectures), (4, ARM));
        assert_eq!(find("m1.small").unwrap().hypervisor, "xen");
        assert!(find("x9.huge").is_none());
    }
}
