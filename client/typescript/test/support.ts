/** What the tests share: the service's address (set by tests/sdk/test_typescript.py) and a
 * TCP proxy in front of it that can cut every open connection, as a network failure would. */

import { randomUUID } from "node:crypto";
import * as net from "node:net";

export function target(): string {
  const address = process.env.PORTFOLIO_TARGET;
  if (address === undefined || address === "") {
    throw new Error("PORTFOLIO_TARGET is not set: run these through tests/sdk/test_typescript.py");
  }
  return address;
}

/** How many updates the service keeps for resuming (its --replay-capacity). */
export function replayCapacity(): number {
  const capacity = Number(process.env.PORTFOLIO_REPLAY_CAPACITY);
  if (!Number.isInteger(capacity) || capacity <= 0) throw new Error("PORTFOLIO_REPLAY_CAPACITY is not set");
  return capacity;
}

/** A fresh id, so tests sharing one service never see each other's rows. */
export function unique(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export class CuttableProxy {
  /** Connections accepted, and bytes forwarded from the client to the service. */
  connections = 0;
  bytesFromClient = 0;
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;

  /** While true, new connections are accepted and never answered (a hung network). */
  blackhole = false;

  private constructor(upstream: string) {
    const [host, port] = splitAddress(upstream);
    this.server = net.createServer((client) => {
      this.connections += 1;
      client.on("data", (chunk: Buffer) => {
        this.bytesFromClient += chunk.length;
      });
      if (this.blackhole) {
        this.sockets.add(client);
        client.on("close", () => this.sockets.delete(client));
        client.on("error", () => client.destroy());
        return;
      }
      const service = net.connect(port, host);
      for (const socket of [client, service]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => socket.destroy());
      }
      client.pipe(service);
      service.pipe(client);
      client.on("close", () => service.destroy());
      service.on("close", () => client.destroy());
    });
  }

  static async start(upstream: string): Promise<CuttableProxy> {
    const proxy = new CuttableProxy(upstream);
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get address(): string {
    const { port } = this.server.address() as net.AddressInfo;
    return `127.0.0.1:${port}`;
  }

  /** Resets every open connection (new ones are still accepted). */
  cut(): void {
    for (const socket of this.sockets) socket.resetAndDestroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}
