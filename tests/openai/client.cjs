// The official OpenAI client for Node.js against modeld's HTTP listener.
// usage: node client.cjs BASE_URL MODEL PROMPT_JSON CHAT(yes|no)
// Prints one JSON object: what a completion and a chat gave, whole and
// streamed, or the error the client raised.
const OpenAI = require("openai");

async function drain(stream, piece) {
	const got = { text: "", finish: null, usage: null, chunks: 0 };
	for await (const chunk of stream) {
		got.chunks++;
		if (chunk.choices.length) {
			got.text += piece(chunk.choices[0]) ?? "";
			got.finish = chunk.choices[0].finish_reason ?? got.finish;
		}
		if (chunk.usage)
			got.usage = chunk.usage;
	}
	return got;
}

async function attempt(fn) {
	try {
		return await fn();
	} catch (e) {
		return { error: { status: e.status ?? null, code: e.code ?? null, type: e.type ?? null, message: e.message } };
	}
}

async function main() {
	const [base, model, promptJson, chat] = process.argv.slice(2);
	const client = new OpenAI({ baseURL: base + "/v1", apiKey: "unused", maxRetries: 0 });
	const ask = { model, prompt: JSON.parse(promptJson), max_tokens: 8, temperature: 0 };
	const messages = [{ role: "user", content: "Say something." }];
	const out = {};

	out.models = (await client.models.list()).data.map((m) => m.id);
	out.completion = await attempt(async () => {
		const c = await client.completions.create(ask);
		return { text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage, object: c.object };
	});
	out.completion_stream = await attempt(async () => drain(await client.completions.create(
		{ ...ask, stream: true, stream_options: { include_usage: true } }), (c) => c.text));
	out.chat = await attempt(async () => {
		const c = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
		return { text: c.choices[0].message.content, role: c.choices[0].message.role,
			 finish: c.choices[0].finish_reason, usage: c.usage };
	});
	out.chat_stream = await attempt(async () => drain(await client.chat.completions.create(
		{ model, messages, max_tokens: 8, temperature: 0, stream: true }), (c) => c.delta.content));
	out.unknown_model = await attempt(() => client.completions.create({ ...ask, model: "no-such-model" }));
	console.log(JSON.stringify(out));
}

main().catch((e) => {
	console.error(e);
	process.exit(1);
});
