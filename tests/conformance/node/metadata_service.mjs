// Reads the metadata paths given as arguments with @aws-sdk/ec2-metadata-service's MetadataService
// and prints {"<path>": "<value>", ...}. IMDS_CONFORMANCE_DISABLE_TOKEN=true makes it an IMDSv1
// (token-less) client through the SDK's own disableFetchToken option.
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
  console.error(`ec2-metadata-service failed: ${error.statusCode ?? ""} ${error.message}`);
  process.exit(1);
}
