import { Engine } from 'ramus';
const e = new Engine({ db: '/tmp/review-w.sqlite' });
e.register({ r: async () => 1 });
const w = e.work({ pollInterval: 1e9 });
await new Promise(r => setTimeout(r, 50));
for (let i = 0; i < 3; i++) { const t = performance.now(); const n = await w.poll(); console.log('poll', n, (performance.now() - t).toFixed(1), 'ms'); }
await w.stop(); await e.close();
