import {
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { ArchiveLocation, ArchiveSigner } from "../../domain/work-archive";

/**
 * Presigned S3 URLs for work archives (server/domain/work-archive.ts). Presigning is local (no
 * request to AWS), but needs credentials: the web process signs the wipe commands' PUT URLs and
 * the profile's GET links, with the default AWS credential chain (instance role, environment).
 * `endpoint` (LABLINK_S3_ENDPOINT) points at an S3-compatible store instead, path-style.
 */
export class S3ArchiveSigner implements ArchiveSigner {
  private readonly clients = new Map<string, S3Client>();

  constructor(private readonly overrides: Partial<S3ClientConfig> & { endpoint?: string } = {}) {}

  private client(region: string): S3Client {
    let c = this.clients.get(region);
    if (!c) {
      c = new S3Client({
        region,
        ...(this.overrides.endpoint ? { forcePathStyle: true } : {}),
        ...this.overrides,
      });
      this.clients.set(region, c);
    }
    return c;
  }

  presignPut(loc: ArchiveLocation, expiresInS: number): Promise<string> {
    return getSignedUrl(
      this.client(loc.region),
      new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, ContentType: "application/gzip" }),
      { expiresIn: expiresInS },
    );
  }

  presignGet(loc: ArchiveLocation, expiresInS: number): Promise<string> {
    return getSignedUrl(
      this.client(loc.region),
      new GetObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        ResponseContentDisposition: `attachment; filename="${loc.key.split("/").pop() ?? "work.tar.gz"}"`,
      }),
      { expiresIn: expiresInS },
    );
  }
}
