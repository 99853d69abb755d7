/**
 * A minimal cluster DNS for the real node's pods (hack/cluster/real-node.ts): answers A queries for
 * `<service>.<namespace>.svc.cluster.local` with the Service's ClusterIP, read from the API server.
 * Every other name is NXDOMAIN: nothing is forwarded anywhere, so no query leaves the machine.
 *
 *   cluster-dns.ts LISTEN_HOST KUBECONFIG_DIR_PKI API_PORT
 * (the admin certificate, key and CA of the cluster's pki/ directory).
 */
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';

const SUFFIX = '.svc.cluster.local';

export interface DnsQuestion {
  readonly id: number;
  readonly name: string;
  readonly type: number;
  /** The question section as received (copied into the answer). */
  readonly raw: Buffer;
  readonly flags: number;
}

/** The first question of a DNS query; undefined when malformed. */
export function parseQuery(msg: Buffer): DnsQuestion | undefined {
  if (msg.length < 12 || msg.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let offset = 12;
  for (;;) {
    const len = msg[offset];
    if (len === undefined || len > 63) return undefined;
    offset += 1;
    if (len === 0) break;
    labels.push(
      msg
        .subarray(offset, offset + len)
        .toString('ascii')
        .toLowerCase(),
    );
    offset += len;
  }
  if (offset + 4 > msg.length) return undefined;
  return {
    id: msg.readUInt16BE(0),
    flags: msg.readUInt16BE(2),
    name: labels.join('.'),
    type: msg.readUInt16BE(offset),
    raw: msg.subarray(12, offset + 4),
  };
}

/** `service.namespace` of a cluster name, or undefined. */
export function serviceOf(name: string): { service: string; namespace: string } | undefined {
  if (!name.endsWith(SUFFIX)) return undefined;
  const parts = name.slice(0, -SUFFIX.length).split('.');
  if (parts.length !== 2) return undefined;
  const [service, namespace] = parts as [string, string];
  return { service, namespace };
}

/** An answer: rcode 0 with the A record (or none, for other types), 3 (NXDOMAIN) without an address. */
export function answer(q: DnsQuestion, ip: string | undefined, exists: boolean): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  const rd = q.flags & 0x0100;
  header.writeUInt16BE(0x8000 | 0x0400 | rd | 0x0080 | (exists ? 0 : 3), 2);
  header.writeUInt16BE(1, 4);
  const records: Buffer[] = [];
  if (exists && ip !== undefined && q.type === 1) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(1, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(5, 6);
    rr.writeUInt16BE(4, 10);
    ip.split('.').forEach((octet, i) => {
      rr[12 + i] = Number(octet);
    });
    records.push(rr);
  }
  header.writeUInt16BE(records.length, 6);
  return Buffer.concat([header, q.raw, ...records]);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [host, pki, port] = process.argv.slice(2);
  if (host === undefined || pki === undefined || port === undefined) {
    process.stderr.write('usage: cluster-dns.ts LISTEN_HOST PKI_DIR API_PORT\n');
    process.exit(2);
  }
  const tls = {
    ca: readFileSync(join(pki, 'ca.crt')),
    cert: readFileSync(join(pki, 'admin.crt')),
    key: readFileSync(join(pki, 'admin.key')),
  };
  const clusterIp = (namespace: string, service: string) =>
    new Promise<string | undefined>((resolve) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: Number(port),
          path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/services/${encodeURIComponent(service)}`,
          ...tls,
          servername: 'localhost',
          timeout: 2000,
        },
        (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => {
            body += chunk.toString();
          });
          res.on('end', () => {
            if (res.statusCode !== 200) return resolve(undefined);
            const ip = (JSON.parse(body) as { spec?: { clusterIP?: string } }).spec?.clusterIP;
            resolve(ip !== undefined && /^\d+\.\d+\.\d+\.\d+$/.test(ip) ? ip : undefined);
          });
        },
      );
      req.on('error', () => resolve(undefined));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  const socket = createSocket('udp4');
  socket.on('message', (msg, from) => {
    const q = parseQuery(msg);
    if (q === undefined) return;
    const svc = serviceOf(q.name);
    const reply = (ip: string | undefined) =>
      socket.send(answer(q, ip, ip !== undefined), from.port, from.address);
    if (svc === undefined) reply(undefined);
    else void clusterIp(svc.namespace, svc.service).then(reply);
  });
  socket.bind(53, host, () => process.stdout.write(`cluster DNS on ${host}:53\n`));
}
