// Compiled with `tsc --noEmit` by tests/it/js_client.rs: the declarations of clients/js must
// describe how the README uses the module (and reject misuse, see the @ts-expect-error lines).
import { io } from 'socket.io-client';
import { createWalcastClient, memoryStorage, type StrapiEntry } from '../../clients/js/index.js';

interface Article extends StrapiEntry {
  title: string;
  views: number | null;
}

const walcast = createWalcastClient<{ article: Article }>(io, {
  url: 'http://localhost:1338',
  token: 'a-jwt',
  strategy: 'jwt',
  storage: memoryStorage(),
});
const stop = walcast.onContent('article', {
  create: (article, offset) => console.log(article.title.toUpperCase(), offset.length),
  delete: (deleted) => console.log(deleted.documentId, deleted.locale),
});
stop();
walcast.onGap((gap) => console.log(gap.offset, gap.oldest));
void walcast.subscribeEntity('api::article.article', 'abc').then((ack) => ack.success);
// @ts-expect-error: `title` is not a string method target on a delete payload
walcast.onContent('article', { delete: (deleted) => deleted.title.toUpperCase() });
// @ts-expect-error: unknown strategy
createWalcastClient(io, { url: 'x', strategy: 'password' });
