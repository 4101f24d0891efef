import type { NextRequest } from "next/server";
import { clientIp } from "@/server/api/handler";
import { handlers } from "@/server/auth/config";
import { signInThrottle } from "@/server/auth/rate-limit";
import { getDb } from "@/server/db/client";

export const { GET } = handlers;

export async function POST(req: NextRequest) {
  return (await signInThrottle(getDb(), req, clientIp(req.headers))) ?? handlers.POST(req);
}
