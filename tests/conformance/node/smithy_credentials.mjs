// Fetches role credentials with @smithy/credential-provider-imds, as the AWS SDK for JavaScript
// does on EC2 (it reads AWS_EC2_METADATA_SERVICE_ENDPOINT and AWS_EC2_METADATA_V1_DISABLED itself),
// and prints them as one JSON object.
import { fromInstanceMetadata } from "@smithy/credential-provider-imds";

try {
  const credentials = await fromInstanceMetadata({ timeout: 2000, maxRetries: 0 })();
  console.log(
    JSON.stringify({
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
      expiration: credentials.expiration?.toISOString(),
    }),
  );
} catch (error) {
  console.error(`credential-provider-imds failed: ${error.message}`);
  process.exit(1);
}
