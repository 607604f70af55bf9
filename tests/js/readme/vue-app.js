// README.md's Vue 3 example (`useArticles`, imported as `readme-block` by readme-browser.mjs)
// in an app: one @walcast/client for the page, a list rendered from the composable.
import { createApp, defineComponent, h } from 'vue';
import { io } from 'socket.io-client';
import { createWalcastClient } from '@walcast/client';
import { useArticles } from 'readme-block';

const walcast = createWalcastClient(io, { url: window.WALCAST_URL });
walcast.socket.on('connect', () => console.log('readme:connected'));

const Articles = defineComponent({
  setup() {
    const articles = useArticles(walcast, []);
    return () => h('ul', { id: 'articles' }, articles.value.map((a) => h('li', { key: a.documentId }, a.title)));
  },
});

createApp(Articles).mount('#root');
