import { type ChildProcess, spawn } from "node:child_process";
import { access, constants } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { delimiter, join } from "node:path";
import { WebSocket } from "ws";
import type { ResearchUser } from "../accounts";
import { childEnv } from "../child-env";
import type { Logger } from "../log";

/**
 * The VM's browser desktop: a display with a light window manager and a terminal, served over VNC
 * on 127.0.0.1 only, for the holder's account. TigerVNC's Xvnc (X server and VNC server in one)
 * when installed: the viewer's window size becomes the remote session's size (RFB
 * SetDesktopSize). Otherwise Xvfb served by x11vnc, whose session keeps its size (the page
 * scales the picture). The server never connects in: for each
 * viewer it sends a `desktop` command and the agent opens an outbound WebSocket to the server
 * (`/api/agent/desktop/<relayId>`, its bearer token) and copies bytes between it and the VNC port.
 *
 * Started for the assignment's first viewer, stopped at wipe; on the local fleet (not root) it runs as the agent's user.
 * Missing packages (Xvnc, or Xvfb and x11vnc) mean no desktop: the agent logs it once and refuses relays.
 */

/** The root window's colour: a known pattern the end-to-end test looks for on the canvas. */
export const DESKTOP_ROOT_COLOUR = "#1f6f5c";

export type DesktopOptions = {
  /** "off": never; "auto": when Xvnc, or Xvfb and x11vnc, are installed. */
  mode: "auto" | "off";
  geometry: string;
  /**
   * Local fleet only: the terminal appends what is typed into it to this file (the end-to-end
   * test reads it) instead of running a shell.
   */
  typingFile?: string | null;
  log: Logger;
  /** PATH to look for the programs in (tests). */
  path?: string;
};

export type DesktopAccount = { user: ResearchUser | null; home: string };

type Running = {
  assignmentId: string;
  display: number;
  port: number;
  children: ChildProcess[];
};

async function findProgram(name: string, path: string): Promise<string | null> {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const file = join(dir, name);
    try {
      await access(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

function waitForPort(port: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  return new Promise((resolve) => {
    const attempt = () => {
      const s = createConnection({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => {
        s.destroy();
        if (Date.now() > until) resolve(false);
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** A VNC server this VM can run: TigerVNC's Xvnc, or Xvfb served by x11vnc. */
const hasVnc = (p: Record<string, string | null>) => !!p.Xvnc || (!!p.Xvfb && !!p.x11vnc);

export class DesktopHost {
  private running: Running | null = null;
  private starting: Promise<Running | null> | null = null;
  private programs: Record<string, string | null> | null = null;
  private readonly relays = new Set<WebSocket>();
  private missingLogged = false;

  constructor(private readonly o: DesktopOptions) {
    // Never leave a display behind when the agent exits (the next agent starts its own).
    process.once("exit", () => this.killChildren());
  }

  /** The X display the running desktop is on (":N"), or null. */
  get display(): string | null {
    return this.running ? `:${this.running.display}` : null;
  }

  /** The running desktop's VNC port on 127.0.0.1, if one runs. */
  get vncPort(): number | null {
    return this.running?.port ?? null;
  }

  /** Viewers connected now; while there is one, the VM is in use. */
  get viewers(): number {
    return this.relays.size;
  }

  private async find() {
    // Looked up again while no VNC server is there: a cloud VM installs them after boot.
    if (this.programs && hasVnc(this.programs)) return this.programs;
    const path = this.o.path ?? process.env.PATH ?? "/usr/bin:/bin";
    const names = ["Xvnc", "Xvfb", "x11vnc", "openbox", "xterm", "xsetroot"];
    const found = await Promise.all(names.map((n) => findProgram(n, path)));
    this.programs = Object.fromEntries(names.map((n, i) => [n, found[i] ?? null]));
    return this.programs;
  }

  /** Starts the desktop for an assignment (idempotent); false when this VM cannot have one. */
  async start(assignmentId: string, account: DesktopAccount): Promise<boolean> {
    if (this.o.mode === "off") return false;
    if (this.running?.assignmentId === assignmentId) return true;
    if (this.starting) await this.starting.catch(() => null);
    if (this.running?.assignmentId === assignmentId) return true;
    if (this.running) await this.stop();
    this.starting = this.launch(assignmentId, account);
    try {
      this.running = await this.starting;
    } finally {
      this.starting = null;
    }
    return this.running !== null;
  }

  private async launch(assignmentId: string, account: DesktopAccount): Promise<Running | null> {
    const p = await this.find();
    if (!hasVnc(p)) {
      if (!this.missingLogged) {
        // Once: a VM without the packages says so, not on every assignment.
        this.missingLogged = true;
        this.o.log.warn("no browser desktop: neither Xvnc nor Xvfb and x11vnc are installed", {
          missing: ["Xvnc", "Xvfb", "x11vnc"].filter((n) => !p[n]),
        });
      }
      return null;
    }
    const { user, home } = account;
    const asUser =
      user && process.getuid?.() === 0 && user.uid !== 0 ? { uid: user.uid, gid: user.gid } : {};
    const baseEnv: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: home,
      ...(user ? { USER: user.name, LOGNAME: user.name } : {}),
      LANG: process.env.LANG ?? "C.UTF-8",
    };
    const children: ChildProcess[] = [];
    const run = (file: string, args: string[], env: Record<string, string>) => {
      const child = spawn(file, args, {
        ...asUser,
        cwd: home,
        env: childEnv(env),
        stdio: ["ignore", "ignore", "ignore"],
      });
      child.on("error", (err) =>
        this.o.log.warn("desktop program failed", { program: file, error: err.message }),
      );
      children.push(child);
      return child;
    };
    // -displayfd: the X server picks a free display number and writes it to fd 3 once it accepts
    // clients. Xvnc also serves VNC itself, on 127.0.0.1 only, without a password (see
    // docs/security.md), and takes the viewer's size (SetDesktopSize).
    const xvnc = p.Xvnc;
    const vncPort = xvnc ? await freePort() : 0;
    const xvfb = spawn(
      (xvnc ?? p.Xvfb) as string,
      xvnc
        ? [
            "-displayfd",
            "3",
            "-geometry",
            this.o.geometry,
            "-depth",
            "24",
            "-rfbport",
            String(vncPort),
            "-localhost",
            "-SecurityTypes",
            "None",
            "-AlwaysShared",
            "-AcceptSetDesktopSize",
            "-nolisten",
            "tcp",
          ]
        : ["-displayfd", "3", "-screen", "0", `${this.o.geometry}x24`, "-nolisten", "tcp"],
      {
        ...asUser,
        cwd: home,
        env: childEnv(baseEnv),
        stdio: ["ignore", "ignore", "ignore", "pipe"],
      },
    );
    children.push(xvfb);
    const display = await new Promise<number | null>((resolve) => {
      let text = "";
      const timer = setTimeout(() => resolve(null), 10_000);
      xvfb.stdio[3]?.on("data", (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes("\n")) {
          clearTimeout(timer);
          resolve(Number.parseInt(text, 10));
        }
      });
      xvfb.once("exit", () => {
        clearTimeout(timer);
        resolve(null);
      });
      xvfb.once("error", () => {
        clearTimeout(timer);
        resolve(null);
      });
    });
    if (display === null || !Number.isInteger(display)) {
      this.killList(children);
      this.o.log.error(`browser desktop: ${xvnc ? "Xvnc" : "Xvfb"} did not start`);
      return null;
    }
    const env = { ...baseEnv, DISPLAY: `:${display}` };
    // The root colour is painted again once the window manager is up (openbox may clear it).
    const xsetroot = p.xsetroot;
    const paintRoot = () => {
      if (xsetroot) run(xsetroot, ["-solid", DESKTOP_ROOT_COLOUR], env);
    };
    paintRoot();
    if (p.openbox) run(p.openbox, [], env);
    if (p.xterm) {
      const xterm = p.xterm;
      const typing = this.o.typingFile;
      const args = typing
        ? ["-geometry", "80x20+40+40", "-e", "/bin/sh", "-c", 'exec cat >> "$0"', typing]
        : ["-geometry", "100x30+40+40", "-ls"];
      // A terminal started while the window manager takes over the display sometimes fails to
      // open it ("Can't open display"): one that fails within seconds is started again.
      let tries = 0;
      const startTerminal = () => {
        const startedAt = Date.now();
        const child = run(xterm, args, env);
        child.once("exit", (code) => {
          if (code === 0 || Date.now() - startedAt > 5_000 || tries >= 5) return;
          // Not after the desktop was stopped (its display is gone with it).
          if (xvfb.exitCode !== null || xvfb.signalCode !== null || xvfb.killed) return;
          tries += 1;
          setTimeout(startTerminal, 300).unref();
        });
      };
      startTerminal();
    }
    let port = vncPort;
    let vnc: ChildProcess = xvfb;
    if (!xvnc) {
      port = await freePort();
      vnc = run(
        p.x11vnc as string,
        [
          "-display",
          `:${display}`,
          "-localhost",
          "-rfbport",
          String(port),
          "-nopw",
          "-forever",
          "-shared",
          "-quiet",
          "-xkb",
          "-noxrecord",
        ],
        env,
      );
    }
    if (!(await waitForPort(port, 10_000))) {
      this.killList(children);
      this.o.log.error(`browser desktop: ${xvnc ? "Xvnc" : "x11vnc"} did not start`);
      return null;
    }
    paintRoot();
    setTimeout(paintRoot, 2_000).unref();
    this.o.log.info("browser desktop started", {
      display,
      port,
      server: xvnc ? "Xvnc" : "x11vnc",
      user: user?.name ?? null,
    });
    const running: Running = { assignmentId, display, port, children };
    // The display or the VNC server died (killed by the researcher, crashed): the next viewer
    // starts the desktop again instead of failing on a dead port.
    for (const c of new Set([xvfb, vnc])) {
      c.once("exit", () => {
        if (this.running !== running) return;
        this.o.log.warn("browser desktop stopped by itself; it restarts for the next viewer");
        this.running = null;
        this.killList(children);
      });
    }
    return running;
  }

  /** Closes every relay and stops the desktop's programs (wipe). */
  async stop(): Promise<void> {
    for (const ws of this.relays) ws.terminate();
    this.relays.clear();
    const r = this.running;
    this.running = null;
    if (!r) return;
    this.killList(r.children);
    await Promise.all(
      r.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const t = setTimeout(() => {
              c.kill("SIGKILL");
              resolve();
            }, 2_000);
            c.once("exit", () => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
    this.o.log.info("browser desktop stopped", { display: r.display });
  }

  private killList(children: ChildProcess[]) {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
    }
  }

  private killChildren() {
    if (this.running) this.killList(this.running.children);
  }

  /**
   * Opens the agent's side of a relay: an outbound WebSocket to the server, piped to the local
   * VNC port. Starts the desktop first if it is not running (an agent restarted mid-assignment).
   */
  async relay(req: {
    relayId: string;
    assignmentId: string;
    serverUrl: string;
    token: () => string;
    account: () => Promise<DesktopAccount>;
  }): Promise<void> {
    const log = this.o.log.child({ relayId: req.relayId });
    if (this.running?.assignmentId !== req.assignmentId) {
      await this.start(req.assignmentId, await req.account());
    }
    const running = this.running;
    if (!running) throw new Error("this VM has no desktop");
    const url = `${req.serverUrl.replace(/^http/, "ws").replace(/\/+$/, "")}/api/agent/desktop/${req.relayId}`;
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${req.token()}` },
      perMessageDeflate: false,
      maxPayload: 64 * 1024 * 1024,
    });
    const vnc = createConnection({ host: "127.0.0.1", port: running.port });
    vnc.setNoDelay(true);
    this.relays.add(ws);
    const end = (why: string) => {
      if (!this.relays.delete(ws)) return;
      log.info("desktop relay closed", { why });
      vnc.destroy();
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
    };
    // VNC bytes wait until the server accepted the socket (the server speaks first in RFB).
    vnc.pause();
    ws.on("open", () => {
      log.info("desktop relay open");
      vnc.resume();
    });
    vnc.on("data", (chunk: Buffer) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(chunk, { binary: true });
      // A slow viewer: stop reading the VNC server until the socket drains.
      if (ws.bufferedAmount > 4 * 1024 * 1024) {
        vnc.pause();
        const wait = setInterval(() => {
          if (ws.bufferedAmount < 1024 * 1024 || ws.readyState !== WebSocket.OPEN) {
            clearInterval(wait);
            vnc.resume();
          }
        }, 10);
      }
    });
    ws.on("message", (data: Buffer) => {
      if (!vnc.write(data)) {
        ws.pause();
        vnc.once("drain", () => ws.resume());
      }
    });
    ws.on("unexpected-response", (_req, res) => end(`server refused (${res.statusCode})`));
    ws.on("close", () => end("server closed"));
    ws.on("error", (err) => end(`socket error: ${err.message}`));
    vnc.on("close", () => end("VNC server closed"));
    vnc.on("error", (err) => end(`VNC error: ${err.message}`));
  }
}
