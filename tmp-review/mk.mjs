import { Engine } from 'ramus';
const e = new Engine({ db: '/tmp/review-plan.sqlite' });
e.register({ r: async () => 1 });
e.define({ name: 'd', nodes: { a: { runner: 'r' } } });
e.enqueue('d', {});
await e.close();
