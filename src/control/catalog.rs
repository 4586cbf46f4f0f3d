//! The calls tools make before anything else, answered from what imds models: the region and
//! its zones (`DescribeRegions`, `DescribeAvailabilityZones`), the account's attributes
//! (`DescribeAccountAttributes`), the instance types imds knows (`DescribeInstanceTypes`, see
//! [`crate::fleet::instance_types`]) and the images its instances and launch templates use
//! (`DescribeImages`).

use std::collections::BTreeMap;

use super::error::ControlError;
use super::paging::Page;
use super::query::QueryRequest;
use super::vpc::Filters;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::instance_types::{self, InstanceType};
use crate::fleet::metadata::render;

/// What one image in use looks like.
struct Image {
    id: String,
    architecture: String,
    root_device: String,
    created: time::OffsetDateTime,
}

impl ControlApi {
    /// `DescribeRegions` (`RegionName.N`; filters `region-name`, `endpoint`,
    /// `opt-in-status`): the one region imds serves.
    pub(super) fn describe_regions(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let region = network.region.as_str();
        let endpoint = format!("ec2.{region}.amazonaws.com");
        for name in query.list("RegionName") {
            if name != region {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Invalid region: {name} (imds serves {region})"
                )));
            }
        }
        let filters = Filters::new(query, &["region-name", "endpoint", "opt-in-status"])?;
        let shown = filters.matches(&Default::default(), |name| match name {
            "region-name" => vec![region.to_owned()],
            "endpoint" => vec![endpoint.clone()],
            "opt-in-status" => vec!["opt-in-not-required".into()],
            _ => Vec::new(),
        });
        let mut xml = Xml::response("DescribeRegionsResponse", request_id);
        xml.open("regionInfo");
        if shown {
            xml.open("item")
                .leaf("regionName", region)
                .leaf("regionEndpoint", &endpoint)
                .leaf("optInStatus", "opt-in-not-required")
                .close();
        }
        xml.close();
        Ok(xml.finish())
    }

    /// `DescribeAvailabilityZones` (`ZoneName.N`, `ZoneId.N`; filters `zone-name`, `zone-id`,
    /// `state`, `region-name`, `group-name`, `zone-type`, `opt-in-status`).
    pub(super) fn describe_availability_zones(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let names = query.list("ZoneName");
        let ids = query.list("ZoneId");
        for name in &names {
            if !network.zones().iter().any(|z| z.name == *name) {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Invalid availability zone: [{name}]"
                )));
            }
        }
        for id in &ids {
            if !network.zones().iter().any(|z| z.id == *id) {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Invalid availability zone ID: [{id}]"
                )));
            }
        }
        let filters = Filters::new(
            query,
            &[
                "zone-name",
                "zone-id",
                "state",
                "region-name",
                "group-name",
                "zone-type",
                "opt-in-status",
                "message",
            ],
        )?;
        let mut xml = Xml::response("DescribeAvailabilityZonesResponse", request_id);
        xml.open("availabilityZoneInfo");
        for zone in network.zones() {
            let named = names.contains(&zone.name.as_str()) || ids.contains(&zone.id.as_str());
            if (!names.is_empty() || !ids.is_empty()) && !named {
                continue;
            }
            let shown = filters.matches(&Default::default(), |name| match name {
                "zone-name" => vec![zone.name.clone()],
                "zone-id" => vec![zone.id.clone()],
                "state" => vec!["available".into()],
                "region-name" | "group-name" => vec![network.region.clone()],
                "zone-type" => vec!["availability-zone".into()],
                "opt-in-status" => vec!["opt-in-not-required".into()],
                _ => Vec::new(),
            });
            if shown {
                xml.open("item")
                    .leaf("optInStatus", "opt-in-not-required")
                    .leaf("zoneName", &zone.name)
                    .leaf("zoneId", &zone.id)
                    .leaf("groupName", &network.region)
                    .leaf("networkBorderGroup", &network.region)
                    .leaf("zoneType", "availability-zone")
                    .leaf("groupLongName", &network.region)
                    .leaf("zoneState", "available")
                    .leaf("regionName", &network.region)
                    .open("messageSet")
                    .close()
                    .close();
            }
        }
        xml.close();
        Ok(xml.finish())
    }

    /// `DescribeAccountAttributes` (`AttributeName.N`): the platforms, the default VPC and
    /// EC2's default quotas.
    pub(super) fn describe_account_attributes(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let default_vpc = network
            .default_vpc()
            .map_or_else(|_| "none".to_owned(), |vpc| vpc.id.clone());
        let attributes: [(&str, Vec<String>); 6] = [
            ("supported-platforms", vec!["VPC".into()]),
            ("default-vpc", vec![default_vpc]),
            ("max-instances", vec!["20".into()]),
            ("vpc-max-security-groups-per-interface", vec!["5".into()]),
            ("max-elastic-ips", vec!["5".into()]),
            ("vpc-max-elastic-ips", vec!["5".into()]),
        ];
        let asked = query.list("AttributeName");
        for name in &asked {
            if !attributes.iter().any(|(known, _)| known == name) {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value ({name}) for parameter attributeName is invalid."
                )));
            }
        }
        let mut xml = Xml::response("DescribeAccountAttributesResponse", request_id);
        xml.open("accountAttributeSet");
        for (name, values) in attributes {
            if !asked.is_empty() && !asked.contains(&name) {
                continue;
            }
            xml.open("item")
                .leaf("attributeName", name)
                .open("attributeValueSet");
            for value in values {
                xml.open("item").leaf("attributeValue", value).close();
            }
            xml.close().close();
        }
        xml.close();
        Ok(xml.finish())
    }

    /// `DescribeInstanceTypes` (`InstanceType.N`; filters `instance-type`,
    /// `current-generation`, `processor-info.supported-architecture`,
    /// `vcpu-info.default-vcpus`, `vcpu-info.default-cores`, `memory-info.size-in-mib`,
    /// `hypervisor`, `burstable-performance-supported`; `MaxResults` 5 to 100, `NextToken`).
    pub(super) fn describe_instance_types(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let asked = query.list("InstanceType");
        for name in &asked {
            if instance_types::find(name).is_none() {
                return Err(ControlError::InvalidInstanceType(format!(
                    "The following supplied instance types do not exist: [{name}]"
                )));
            }
        }
        let filters = Filters::new(
            query,
            &[
                "instance-type",
                "current-generation",
                "processor-info.supported-architecture",
                "vcpu-info.default-vcpus",
                "vcpu-info.default-cores",
                "vcpu-info.default-threads-per-core",
                "memory-info.size-in-mib",
                "hypervisor",
                "burstable-performance-supported",
                "network-info.ena-support",
            ],
        )?;
        let page = Page::of(query, 5, 100)?;
        let mut shown = Vec::new();
        for kind in instance_types::all() {
            if !asked.is_empty() && !asked.contains(&kind.name) {
                continue;
            }
            let matches = filters.matches(&Default::default(), |name| match name {
                "instance-type" => vec![kind.name.to_owned()],
                "current-generation" => vec![kind.current_generation.to_string()],
                "processor-info.supported-architecture" => {
                    kind.architectures.iter().map(|a| (*a).to_owned()).collect()
                }
                "vcpu-info.default-vcpus" => vec![kind.vcpus.to_string()],
                "vcpu-info.default-cores" => vec![kind.cores().to_string()],
                "vcpu-info.default-threads-per-core" => vec![kind.threads_per_core.to_string()],
                "memory-info.size-in-mib" => vec![kind.memory_mib.to_string()],
                "hypervisor" => vec![kind.hypervisor.to_owned()],
                "burstable-performance-supported" => vec![kind.burstable.to_string()],
                "network-info.ena-support" => vec![ena(&kind).to_owned()],
                _ => Vec::new(),
            });
            if matches {
                shown.push((kind.name.to_owned(), kind));
            }
        }
        let (shown, next) = page.cut(shown);
        let mut xml = Xml::response("DescribeInstanceTypesResponse", request_id);
        xml.open("instanceTypeSet");
        for kind in shown {
            instance_type_xml(&mut xml, &kind);
        }
        xml.close();
        if let Some(token) = next {
            xml.leaf("nextToken", token);
        }
        Ok(xml.finish())
    }

    /// `DescribeImages` (`ImageId.N`, `Owner.N`; filters `image-id`, `name`, `architecture`,
    /// `state`, `owner-id`, `root-device-type`, `root-device-name`, `virtualization-type`,
    /// `hypervisor`, `is-public`, `image-type`, `platform-details`): the images the instances
    /// use, each as an EBS-backed HVM Linux image of this account.
    pub(super) fn describe_images(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let mut images: BTreeMap<String, Image> = BTreeMap::new();
        for slot in self.inventory.state.instances() {
            let snapshot = slot.current();
            let c = &snapshot.instance.config;
            images.entry(c.ami_id.clone()).or_insert_with(|| Image {
                id: c.ami_id.clone(),
                architecture: c.architecture.clone(),
                root_device: c
                    .block_device_mapping
                    .get("root")
                    .cloned()
                    .unwrap_or_else(|| "/dev/xvda".into()),
                created: c.pending_time,
            });
        }
        let template = &self.inventory.template;
        images
            .entry(template.ami_id.clone())
            .or_insert_with(|| Image {
                id: template.ami_id.clone(),
                architecture: template.architecture.clone(),
                root_device: template
                    .block_device_mapping
                    .get("root")
                    .cloned()
                    .unwrap_or_else(|| "/dev/xvda".into()),
                created: template.pending_time,
            });
        let ids = query.list("ImageId");
        for id in &ids {
            if !images.contains_key(*id) {
                return Err(ControlError::ImageNotFound(format!(
                    "The image id '[{id}]' does not exist"
                )));
            }
        }
        let owners = query.list("Owner");
        // Every image is the account's own: `amazon` or another account's owns none.
        let owned = owners.is_empty()
            || owners
                .iter()
                .any(|o| *o == "self" || *o == network.owner_id);
        let filters = Filters::new(
            query,
            &[
                "image-id",
                "name",
                "architecture",
                "state",
                "owner-id",
                "root-device-type",
                "root-device-name",
                "virtualization-type",
                "hypervisor",
                "is-public",
                "image-type",
                "platform-details",
                "usage-operation",
                "ena-support",
            ],
        )?;
        let mut xml = Xml::response("DescribeImagesResponse", request_id);
        xml.open("imagesSet");
        for image in images.values() {
            if !ids.is_empty() && !ids.contains(&image.id.as_str()) {
                continue;
            }
            if !owned {
                continue;
            }
            let name = format!("imds-{}", image.id);
            let shown = filters.matches(&Default::default(), |filter| match filter {
                "image-id" => vec![image.id.clone()],
                "name" => vec![name.clone()],
                "architecture" => vec![image.architecture.clone()],
                "state" => vec!["available".into()],
                "owner-id" => vec![network.owner_id.clone()],
                "root-device-type" => vec!["ebs".into()],
                "root-device-name" => vec![image.root_device.clone()],
                "virtualization-type" => vec!["hvm".into()],
                "hypervisor" => vec!["xen".into()],
                "is-public" => vec!["false".into()],
                "image-type" => vec!["machine".into()],
                "platform-details" => vec!["Linux/UNIX".into()],
                "usage-operation" => vec!["RunInstances".into()],
                "ena-support" => vec!["true".into()],
                _ => Vec::new(),
            });
            if !shown {
                continue;
            }
            let created = super::key_pairs::iso_millis(image.created);
            xml.open("item")
                .leaf("imageId", &image.id)
                .leaf("imageLocation", format!("{}/{name}", network.owner_id))
                .leaf("imageState", "available")
                .leaf("imageOwnerId", &network.owner_id)
                .leaf("creationDate", &created)
                .leaf("isPublic", false)
                .leaf("architecture", &image.architecture)
                .leaf("imageType", "machine")
                .leaf("name", &name)
                .leaf("description", "An image an imds instance runs")
                .leaf("rootDeviceType", "ebs")
                .leaf("rootDeviceName", &image.root_device)
                .open("blockDeviceMapping")
                .open("item")
                .leaf("deviceName", &image.root_device)
                .open("ebs")
                .leaf(
                    "snapshotId",
                    super::instance_xml::derived_id("snap-", &image.id),
                )
                .leaf("volumeSize", 8)
                .leaf("deleteOnTermination", true)
                .leaf("volumeType", "gp3")
                .leaf("encrypted", false)
                .close()
                .close()
                .close()
                .leaf("virtualizationType", "hvm")
                .leaf("hypervisor", "xen")
                .leaf("enaSupport", true)
                .leaf("sriovNetSupport", "simple")
                .leaf("platformDetails", "Linux/UNIX")
                .leaf("usageOperation", "RunInstances")
                .leaf(
                    "bootMode",
                    match image.architecture.as_str() {
                        "arm64" => "uefi",
                        _ => "uefi-preferred",
                    },
                )
                .leaf("imdsSupport", "v2.0")
                .leaf(
                    "deprecationTime",
                    render::iso_seconds(image.created + time::Duration::days(730)),
                )
                .close();
        }
        xml.close();
        Ok(xml.finish())
    }
}

fn ena(kind: &InstanceType) -> &'static str {
    match kind.ena_supported() {
        true => "required",
        false => "unsupported",
    }
}

fn instance_type_xml(xml: &mut Xml, kind: &InstanceType) {
    let list = |xml: &mut Xml, element: &'static str, values: &[&str]| {
        xml.open(element);
        for value in values {
            xml.leaf("item", value);
        }
        xml.close();
    };
    xml.open("item")
        .leaf("instanceType", kind.name)
        .leaf("currentGeneration", kind.current_generation)
        .leaf(
            "freeTierEligible",
            matches!(kind.name, "t2.micro" | "t3.micro"),
        );
    list(xml, "supportedUsageClasses", &["on-demand", "spot"]);
    list(xml, "supportedRootDeviceTypes", &["ebs"]);
    list(xml, "supportedVirtualizationTypes", &["hvm"]);
    xml.leaf("bareMetal", false)
        .leaf("hypervisor", kind.hypervisor)
        .open("processorInfo");
    list(xml, "supportedArchitectures", kind.architectures);
    xml.close()
        .open("vCpuInfo")
        .leaf("defaultVCpus", kind.vcpus)
        .leaf("defaultCores", kind.cores())
        .leaf("defaultThreadsPerCore", kind.threads_per_core)
        .close()
        .open("memoryInfo")
        .leaf("sizeInMiB", kind.memory_mib)
        .close()
        .leaf("instanceStorageSupported", false)
        .open("ebsInfo")
        .leaf(
            "ebsOptimizedSupport",
            match kind.ena_supported() {
                true => "default",
                false => "unsupported",
            },
        )
        .leaf("encryptionSupport", "supported")
        .leaf(
            "nvmeSupport",
            match kind.ena_supported() {
                true => "required",
                false => "unsupported",
            },
        )
        .close()
        .open("networkInfo")
        .leaf("networkPerformance", kind.network_performance)
        .leaf("ipv6Supported", kind.ena_supported())
        .leaf("enaSupport", ena(kind))
        .close()
        .leaf("hibernationSupported", kind.ena_supported())
        .leaf("burstablePerformanceSupported", kind.burstable)
        .leaf("dedicatedHostsSupported", !kind.burstable)
        .leaf("autoRecoverySupported", true);
    let boot: &[&str] = match kind.architectures.contains(&"arm64") {
        true => &["uefi"],
        false => &["legacy-bios", "uefi"],
    };
    list(xml, "supportedBootModes", boot);
    xml.close();
}
