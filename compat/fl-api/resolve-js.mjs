// fl-api's sources import without file extensions (babel resolved them); Node's ES module loader
// needs them: a relative import that is not found is tried again with ".js".
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (error) {
    if (error.code !== 'ERR_MODULE_NOT_FOUND' || !specifier.startsWith('.')) throw error;
    return next(`${specifier}.js`, context);
  }
}
