/**
 * `tcp-forward.ts LISTEN_HOST:PORT TARGET_HOST:PORT`: forwards every TCP connection. The real node
 * (real-node.ts) reaches the API server, which listens on 127.0.0.1 only, through this forwarder on the
 * host side of its veth pair.
 */
import { connect, createServer } from 'node:net';

function hostPort(text: string | undefined): { host: string; port: number } {
  const match = /^(.+):(\d+)$/.exec(text ?? '');
  if (match === null) {
    process.stderr.write('usage: tcp-forward.ts LISTEN_HOST:PORT TARGET_HOST:PORT\n');
    process.exit(2);
  }
  return { host: match[1] ?? '', port: Number(match[2]) };
}

const listen = hostPort(process.argv[2]);
const target = hostPort(process.argv[3]);
const server = createServer((client) => {
  const upstream = connect(target.port, target.host);
  client.pipe(upstream).pipe(client);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
});
server.listen(listen.port, listen.host, () => {
  process.stdout.write(`forwarding ${listen.host}:${listen.port} -> ${target.host}:${target.port}\n`);
});
