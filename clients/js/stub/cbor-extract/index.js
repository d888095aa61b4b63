// No native extractor: cbor-x checks for one and decodes in plain JS without it.
module.exports = null
