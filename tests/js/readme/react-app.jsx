// README.md's React example (`useArticles`, imported as `readme-block` by readme-browser.mjs)
// in an app: one @walcast/client for the page, a list rendered from the hook.
import { createRoot } from 'react-dom/client';
import { io } from 'socket.io-client';
import { createWalcastClient } from '@walcast/client';
import { useArticles } from 'readme-block';

const walcast = createWalcastClient(io, { url: window.WALCAST_URL });
walcast.socket.on('connect', () => console.log('readme:connected'));

function Articles() {
  const articles = useArticles(walcast, []);
  return (
    <ul id="articles">
      {articles.map((a) => (
        <li key={a.documentId}>{a.title}</li>
      ))}
    </ul>
  );
}

createRoot(document.getElementById('root')).render(<Articles />);
