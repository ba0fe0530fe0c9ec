// The tus side of the comparison in the README's Performance section: the
// official @tus/server with its file store, as a team adding resumable
// uploads would run it. Started by benches/tus-peer.sh; not part of Spool.
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";
import http from "node:http";

const [port = "1080", directory = "./tus-files"] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), "127.0.0.1", () => {
  console.log(`tus listening on http://127.0.0.1:${port}/files (files in ${directory})`);
});
