import nodemailer from "nodemailer";

/** Anything with nodemailer's `sendMail` (a real SMTP transport, or a test transport). */
export type Mailer = { sendMail(message: Record<string, unknown>): Promise<unknown> };

/** The SMTP transport for LABLINK_SMTP_URL, or null when it is not set. */
export function createMailer(smtpUrl: string | undefined): Mailer | null {
  return smtpUrl ? nodemailer.createTransport(smtpUrl) : null;
}
