import net from "node:net";

/**
 * A loopback TCP proxy in front of Postgres that a test can switch off (refusing new connections
 * and cutting open ones) and on again: a network cut or a database that is not there yet.
 */
export async function startTcpProxy(target: { host: string; port: number }) {
  let enabled = true;
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!enabled) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    open.add(client);
    open.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    /** Refuse new connections and cut the open ones. */
    disable() {
      enabled = false;
      for (const s of open) s.destroy();
    },
    enable() {
      enabled = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
