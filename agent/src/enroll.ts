import { enroll } from "./enrollment";

/** `npm run enroll -w agent`: enroll only (the environment names the files); see enrollment.ts. */
process.exit(await enroll());
