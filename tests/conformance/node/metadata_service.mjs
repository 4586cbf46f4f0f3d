// Reads the metadata paths given as arguments (e.g. /latest/meta-data/instance-id) with
// @aws-sdk/ec2-metadata-service's MetadataService and prints {"<path>": "<value>", ...}.
// IMDS_CONFORMANCE_DISABLE_TOKEN=true makes it a token-less (IMDSv1) client through the SDK's
// own disableFetchToken option; the SDK reads AWS_EC2_METADATA_V1_DISABLED itself.
// Exits 1 with a one-line error on stderr.
import { MetadataService } from "@aws-sdk/ec2-metadata-service";

const service = new MetadataService({
  endpoint: process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT,
  httpOptions: { timeout: 2000 },
  disableFetchToken: process.env.IMDS_CONFORMANCE_DISABLE_TOKEN === "true",
  retries: 0,
});

try {
  const values = {};
  for (const path of process.argv.slice(2)) {
    values[path] = await service.request(path, {});
  }
  console.log(JSON.stringify(values));
} catch (error) {
  console.error(`ec2-metadata-service failed: ${error.message}`);
  process.exit(1);
}
