// No imports: the admin page (a client component) reads the event names and labels from here.

/** Events an admin can subscribe a webhook to, with the words the admin page shows. */
export const WEBHOOK_EVENTS = {
  "vm.failed": "A VM failed",
  "recovery.gave_up": "Automatic recovery gave up on a VM",
  "recovery.holder_notice": "A held VM is about to be rebooted or replaced by automatic recovery",
  "pool.empty": "A fleet has no claimable VM left",
  "operation.failed": "An operation failed",
  "fleet.at_size": "A fleet reached its desired size",
  "quota.reached": "A researcher reached a GPU-hour quota",
} as const;
export type WebhookEventType = keyof typeof WEBHOOK_EVENTS;
export const WEBHOOK_EVENT_TYPES = Object.keys(WEBHOOK_EVENTS) as [
  WebhookEventType,
  ...WebhookEventType[],
];
