// Fetches role credentials with @smithy/credential-provider-imds, as the AWS SDK for JavaScript
// does on EC2, and prints {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"} (ISO
// 8601). The provider itself reads AWS_EC2_METADATA_SERVICE_ENDPOINT and
// AWS_EC2_METADATA_V1_DISABLED. Exits 1 with a one-line error on stderr.
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
  const status = error.statusCode ? ` (HTTP ${error.statusCode})` : "";
  console.error(`credential-provider-imds failed: ${error.name}: ${error.message}${status}`);
  process.exit(1);
}
